"""The transcription job against the OpenRouter emulator on 127.0.0.1: faults, aborts, budget,
413 splits, text-only models, diarization, chunk checkpoints after kill -9, and the key."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import jiwer
import pyarrow.parquet as pq
import pytest
import srt

from tests.conftest import ROOT, ffmpeg, normal_words, reference_texts
from voxflow import media
from voxflow.settings import load_settings
from voxflow.testing.emulator import fake_transcript
from voxflow.transcribe import plan_run, run_inline

KEY = "sk-or-v1-test-0123456789abcdef-SECRET"


@pytest.fixture()
def api(emulator):
    """Point the OpenRouter settings at an emulator; yields a function that starts one."""
    return functools.partial(emulator, KEY)


def tones(folder: Path, count: int, seconds: int) -> list[Path]:
    """``count`` distinct recordings: a rising tone, different for each, no two chunks alike."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"rec{i:03d}.flac"
        chirp = f"aevalsrc=0.5*sin(2*PI*{200 + 7 * i}*t*(1+t/30)):s=16000:d={seconds}"  # never repeats
        ffmpeg("-f", "lavfi", "-i", chirp, str(path))
        paths.append(path)
    return paths


def expected_fast_text(path: Path, max_chunk_s: float) -> str:
    """What the emulator's fast_text mode must answer for a recording, chunk by chunk, in order."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = media.prepare_audio(str(path), f"{tmp}/a.wav")
        spans = media.plan_chunks(
            prepared.duration_ms,
            prepared.silences,
            round(max_chunk_s * 1000),
            quietest=lambda w: media.quietest_point(prepared.wav_path, w),
        )
        texts = []
        for span in spans:
            flac = media.encode_pcm(media.read_pcm(prepared.wav_path, span), "flac")
            import hashlib

            digest = hashlib.sha256(flac).hexdigest()
            texts += [s["text"] for s in fake_transcript(digest, span.duration_ms)]
    return " ".join(texts)


def rows(out: Path, table: str = "transcripts") -> list[dict]:
    files = sorted((out / "catalog" / table).glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def test_fifty_recordings_survive_twenty_percent_faults(prefect_harness: None, api, tmp_path: Path) -> None:
    faults = "429:0.06,500:0.03,502:0.02,503:0.02,524:0.02,529:0.02,drop:0.015,malformed:0.015"
    handle = api(faults=faults, retry_after=0.2, fast_text=True, seed=7)
    src, out = tmp_path / "in", tmp_path / "out"
    paths = tones(src, 50, 9)
    from flows.transcribe import transcribe_flow

    options = {"max_chunk_s": 4, "concurrency": 16, "retry_backoff_s": 0.05, "max_attempts": 12}
    summary = transcribe_flow(source=str(src), out=str(out), options=options)
    assert summary["exit_code"] == 0 and summary["done"] == 50, summary["failures"]
    log = handle.log()
    assert sum(e["fault"] is not None for e in log) >= 0.1 * len(log), "faults were injected"
    got = rows(out)
    assert len(got) == 50 and len({r["recording_id"] for r in got}) == 50
    by_name = {Path(r["rel_path"]).name: r for r in got}
    for path in paths[:10]:
        assert by_name[path.name]["text"] == expected_fast_text(path, 4)
    assert all(r["n_chunks"] == 3 and r["attempts"] >= 3 for r in got)
    assert sum(r["cost_usd"] for r in got) > 0


def test_bad_key_aborts_at_once_with_exit_3(api, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from voxflow.cli import app

    handle = api(fast_text=True)
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-wrong")
    tones(tmp_path / "in", 5, 3)
    started = time.monotonic()
    result = CliRunner().invoke(
        app, ["transcribe", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--concurrency", "4"]
    )
    assert result.exit_code == 3, result.output
    assert "AuthError" in result.output and "wrong" not in result.output
    assert time.monotonic() - started < 10
    transcriptions = [e for e in handle.log() if e["endpoint"] == "transcriptions"]
    assert len(transcriptions) <= 4


def test_unknown_model_aborts_with_exit_3(api, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from voxflow.cli import app

    api(fast_text=True)
    tones(tmp_path / "in", 1, 2)
    result = CliRunner().invoke(
        app, ["transcribe", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--model", "acme/nope"]
    )
    assert result.exit_code == 3 and "UnknownModel" in result.output


def test_budget_stops_new_work_and_reports_what_is_left(api, tmp_path: Path) -> None:
    api(fast_text=True)
    tones(tmp_path / "in", 6, 8)
    settings = load_settings(out=str(tmp_path / "out"), max_chunk_s=4, concurrency=1, budget_usd=0.0005)
    summary = run_inline(plan_run(str(tmp_path / "in"), settings))
    assert summary.exit_code == 3 and summary.aborted and "BudgetExceeded" in summary.aborted
    manifest = json.loads(Path(summary.manifest).read_text())
    assert manifest["left_undone"] and manifest["cost_usd"] <= 0.0005 + 1e-9


def test_oversized_chunks_are_split_after_413(api, samples: Path, tmp_path: Path) -> None:
    handle = api(max_body_bytes=150_000)
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(samples / "jfk.flac", src / "jfk.flac")
    summary = run_inline(plan_run(str(src), load_settings(out=str(tmp_path / "out"))))
    assert summary.done == 1
    statuses = Counter(e["status"] for e in handle.log() if e["endpoint"] == "transcriptions")
    assert statuses[413] >= 1 and statuses[200] >= 2
    # Whatever the recogniser makes of each half (it depends on the machine's BLAS kernel),
    # the halves must tile the clip: no words lost or doubled at the cut.
    text = rows(tmp_path / "out")[0]["text"]
    reference = reference_texts()["jfk.flac"]
    assert jiwer.wer(normal_words(reference), normal_words(text)) <= 0.25, text
    assert abs(len(text.split()) - len(reference.split())) <= 0.15 * len(reference.split()), text


def test_text_only_model_still_gets_timed_subtitles(api, samples: Path, tmp_path: Path) -> None:
    api()
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(samples / "jfk.flac", src / "jfk.flac")
    summary = run_inline(plan_run(str(src), load_settings(out=str(out), model="google/chirp-3", language="en")))
    assert summary.done == 1
    cues = list(srt.parse((out / "jfk.en.srt").read_text()))
    assert len(cues) >= 2 and cues[-1].end.total_seconds() <= 11.0
    assert cues[0].start.total_seconds() < 1.0 and cues[-1].end.total_seconds() > 6
    assert rows(out, "words"), "aligned words reach the catalog"


def test_speaker_labels_reach_srt_json_and_parquet(api, samples: Path, tmp_path: Path) -> None:
    api()
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(samples / "beckett.wav", src / "beckett.wav")
    settings = load_settings(out=str(out), model="elevenlabs/scribe-v1", diarize=True)
    assert run_inline(plan_run(str(src), settings)).done == 1
    speakers = {r["speaker"] for r in rows(out, "segments")}
    assert speakers and None not in speakers
    assert any(":" in c.content for c in srt.parse((out / "beckett.en.srt").read_text()))
    doc = json.loads((out / "beckett.en.json").read_text())
    assert all(s["speaker"] for s in doc["segments"])


def test_key_never_reaches_outputs_logs_or_parameters(api, tmp_path: Path) -> None:
    handle = api(faults="500:0.2,429:0.1", retry_after=0.1, fast_text=True)
    tones(tmp_path / "in", 3, 5)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "voxflow.cli", "transcribe", str(tmp_path / "in"), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        env={
            **os.environ,
            "PREFECT_LOGGING_LEVEL": "INFO",
            "VOXFLOW_RETRY_BACKOFF_S": "0.05",
            "VOXFLOW_MAX_CHUNK_S": "2",
        },
        text=True,
        timeout=240,
    )
    failures = [ln for ln in proc.stderr.splitlines() if "✗" in ln or "aborted" in ln or "Error" in ln]
    assert proc.returncode == 0, failures[-20:]
    assert any(e["fault"] for e in handle.log()), "faults were injected"
    assert "retry" in proc.stderr, "retries are logged"
    assert KEY not in proc.stdout + proc.stderr
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    prefect_home = Path(os.environ["PREFECT_HOME"])
    for path in prefect_home.rglob("*"):
        if path.is_file() and path.stat().st_size < 200_000_000:
            assert KEY.encode() not in path.read_bytes(), path


def test_kill_9_then_rerun_sends_only_missing_chunks(api, tmp_path: Path) -> None:
    handle = api(fast_text=True, latency_ms=400)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 4, 20)
    script = (
        "from voxflow.settings import load_settings; from voxflow.transcribe import plan_run, run_inline;"
        f"run_inline(plan_run({str(src)!r}, load_settings(out={str(out)!r}, max_chunk_s=2, concurrency=2)))"
    )
    env = {**os.environ, "OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": handle.url}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    while sum(e["status"] == 200 and e["endpoint"] == "transcriptions" for e in handle.log()) < 12:
        assert time.monotonic() < deadline, "the first run never got going"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = [e for e in handle.log() if e["endpoint"] == "transcriptions"]
    answered = {e["sha256"] for e in first if e["status"] == 200}
    assert len(answered) >= 12
    handle.reset()
    summary = run_inline(plan_run(str(src), load_settings(out=str(out), max_chunk_s=2, concurrency=2)))
    assert summary.done == 4 and summary.exit_code == 0
    resent = {e["sha256"] for e in handle.log() if e["endpoint"] == "transcriptions"}
    # Only chunks whose answer was still on the wire at the kill (≤ concurrency) may go again.
    assert resent and len(resent & answered) <= 2, "chunks answered before the kill were sent again"
    assert len(answered | resent) == sum(r["n_chunks"] for r in rows(out)), "every chunk was answered once"


def test_models_and_voices_commands_list_the_emulator(api) -> None:
    from typer.testing import CliRunner

    from voxflow.cli import app

    api()
    runner = CliRunner()
    models = runner.invoke(app, ["models", "--kind", "transcription"])
    assert models.exit_code == 0 and "openai/whisper-large-v3" in models.output and "local/tiny.en" in models.output
    speech = runner.invoke(app, ["models", "--kind", "speech"])
    assert speech.exit_code == 0 and "openai/tts-1" in speech.output
    voices = runner.invoke(app, ["voices", "openai/tts-1"])
    assert voices.exit_code == 0 and voices.output.split(), voices.output
    unknown = runner.invoke(app, ["voices", "acme/nothing"])
    assert unknown.exit_code == 3
