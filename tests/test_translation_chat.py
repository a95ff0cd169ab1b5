"""Translation into any language through OpenRouter chat completions, against the emulator on
127.0.0.1: the emulator's translation is the input line prefixed with ``[<target>] `` (see
voxflow.testing.emulator), so each translated cue is checked against the original's text, cue
by cue, with the ``srt`` and ``webvtt`` libraries; the catalog is read back by DuckDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import srt
import webvtt
from hypothesis import given
from hypothesis import strategies as st

from tests.chatrun import catalog, tones
from tests.conftest import ROOT
from voxflow.settings import load_settings
from voxflow.transcribe import plan_run, run_inline


def srt_cues(path: Path) -> list[srt.Subtitle]:
    return list(srt.parse(path.read_text(encoding="utf-8")))


def assert_translated(original: Path, translated: Path, target: str) -> None:
    """Same cue count, every cue's start and end equal, text = the emulator's reversible prefix."""
    before, after = srt_cues(original), srt_cues(translated)
    assert len(after) == len(before) > 0
    for a, b in zip(before, after, strict=True):
        assert (a.start, a.end) == (b.start, b.end)
        assert " ".join(b.content.split()) == f"[{target}] " + " ".join(a.content.split())


def vtt_times(path: Path) -> list[tuple[str, str]]:
    return [(c.start, c.end) for c in webvtt.read(str(path))]


def settings(out: Path, **extra):
    return load_settings(out=str(out), max_chunk_s=4, retry_backoff_s=0.05, **extra)


def test_translate_to_two_languages_keeps_every_cue_and_records_it(api, tmp_path: Path) -> None:
    handle = api(fast_text=True)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 2, 9)
    summary = run_inline(plan_run(str(src), settings(out, translate_to="fr,de")))
    assert summary.exit_code == 0, summary.failures
    for i in range(2):
        original = out / f"rec{i}.en.srt"
        for target in ("fr", "de"):
            assert_translated(original, out / f"rec{i}.{target}.srt", target)
            assert vtt_times(out / f"rec{i}.{target}.vtt") == vtt_times(out / f"rec{i}.en.vtt")
            doc = json.loads((out / f"rec{i}.{target}.json").read_text())
            assert doc["language"] == target and doc["translated_from"] == "en"
            assert (out / f"rec{i}.{target}.txt").read_text().startswith(f"[{target}] ")
    rows = catalog(out, "translations")
    assert Counter((r["language"], r["status"]) for r in rows) == {("fr", "done"): 2, ("de", "done"): 2}
    for r in rows:
        assert r["translated_from"] == "en" and r["model"] == "openai/gpt-4o-mini"
        assert r["n_cues"] == len(srt_cues(out / Path(r["path"]).name)) and r["cost_usd"] > 0
    chat = [e for e in handle.log() if e["endpoint"] == "chat"]
    assert chat and all(e["status"] == 200 for e in chat)
    billed = handle.log()  # the emulator's own bill is the oracle for the run's cost
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(sum(e["cost"] for e in chat), abs=1e-9)
    manifest = json.loads(Path(summary.manifest).read_text())
    assert manifest["cost_usd"] == pytest.approx(sum(e.get("cost", 0) for e in billed), abs=1e-6)
    assert sum(r["cost_usd"] for r in catalog(out, "transcripts")) == pytest.approx(manifest["cost_usd"], abs=1e-6)


def test_rerun_adds_only_the_missing_translation_and_never_doubles_rows(api, tmp_path: Path) -> None:
    handle = api(fast_text=True)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 1, 6)
    assert run_inline(plan_run(str(src), settings(out, translate_to="fr"))).exit_code == 0
    handle.reset()
    again = run_inline(plan_run(str(src), settings(out, translate_to="fr,es")))
    assert again.exit_code == 0, again.failures
    log = handle.log()
    assert not [e for e in log if e["endpoint"] == "transcriptions"], "the recording was not transcribed again"
    assert {e["language"] for e in log if e["endpoint"] == "chat"} == {"es"}
    assert_translated(out / "rec0.en.srt", out / "rec0.es.srt", "es")
    handle.reset()
    third = run_inline(plan_run(str(src), settings(out, translate_to="fr,es")))
    assert third.exit_code == 0 and not [e for e in handle.log() if e["endpoint"] in ("chat", "transcriptions")]
    rows = catalog(out, "translations")
    assert Counter(r["language"] for r in rows) == {"fr": 1, "es": 1}
    assert_review_page_links(out, {"rec0.fr.srt", "rec0.es.srt"})


def assert_review_page_links(out: Path, names: set[str]) -> None:
    """The review page of the recording links every sidecar in ``names`` (files on disk)."""
    import re
    from urllib.parse import unquote

    from starlette.testclient import TestClient

    from voxflow.review.app import create_app

    [row] = [r for r in catalog(out, "transcripts") if r["status"] == "done"]
    client = TestClient(create_app(out), base_url="http://127.0.0.1")
    page = client.get(f"/recording/{row['recording_id']}", params={"file": row["rel_path"]})
    linked = {unquote(h).rsplit("/", 1)[-1] for h in re.findall(r'href="/file/([^"]+)"', page.text)}
    assert names <= linked, linked
    assert all((out / name).is_file() for name in names)


def test_a_429_then_success(api, tmp_path: Path) -> None:
    handle = api(fast_text=True, chat_faults="429:1", chat_fault_limit=1, retry_after=0.1)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 1, 6)
    summary = run_inline(plan_run(str(src), settings(out, translate_to="fr")))
    assert summary.exit_code == 0, summary.failures
    statuses = [e["status"] for e in handle.log() if e["endpoint"] == "chat"]
    assert statuses[0] == 429 and statuses[-1] == 200
    assert_translated(out / "rec0.en.srt", out / "rec0.fr.srt", "fr")


def test_a_reply_that_loses_a_line_is_retried_once(api, tmp_path: Path) -> None:
    handle = api(fast_text=True, lose_line_for=("fr",), lose_line_limit=1)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 1, 6)
    summary = run_inline(plan_run(str(src), settings(out, translate_to="fr")))
    assert summary.exit_code == 0, summary.failures
    assert len([e for e in handle.log() if e["endpoint"] == "chat"]) == 2
    assert_translated(out / "rec0.en.srt", out / "rec0.fr.srt", "fr")


def test_a_reply_missing_a_line_twice_fails_that_translation_only(api, tmp_path: Path) -> None:
    api(fast_text=True, lose_line_for=("de",), lose_line_limit=2)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 2, 6)
    summary = run_inline(plan_run(str(src), settings(out, translate_to="fr,de", concurrency=1)))
    assert summary.exit_code == 1 and summary.done == 2
    assert any("de" in f["message"] and "lines" in f["message"] for f in summary.failures), summary.failures
    german = sorted(out.glob("*.de.*"))
    assert len({p.name.split(".")[0] for p in german}) == 1, "one recording's German failed, the other's is there"
    for i in range(2):
        assert_translated(out / f"rec{i}.en.srt", out / f"rec{i}.fr.srt", "fr")
        if (out / f"rec{i}.de.srt").exists():
            assert_translated(out / f"rec{i}.en.srt", out / f"rec{i}.de.srt", "de")
    rows = catalog(out, "translations")
    assert Counter((r["language"], r["status"]) for r in rows) == {
        ("fr", "done"): 2,
        ("de", "done"): 1,
        ("de", "failed"): 1,
    }
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["path"] is None and "lines" in failed["error_message"]
    warnings = [w for r in catalog(out, "transcripts") for w in r["warnings"]]
    assert any("translation to de" in w for w in warnings)


def test_a_target_equal_to_the_recordings_language_is_skipped(api, tmp_path: Path) -> None:
    handle = api(fast_text=True)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 1, 6)
    assert run_inline(plan_run(str(src), settings(out, translate_to="en,fr"))).exit_code == 0
    assert sorted(p.name for p in out.glob("*.srt")) == ["rec0.en.srt", "rec0.fr.srt"]
    assert {e["language"] for e in handle.log() if e["endpoint"] == "chat"} == {"fr"}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "voxflow.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_without_a_key_a_non_english_target_is_refused_before_the_batch(tmp_path: Path) -> None:
    tones(tmp_path / "in", 1, 3)
    env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    env["VOXFLOW_MODEL"] = "local/tiny.en"
    done = cli("transcribe", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--translate-to", "fr,de", env=env)
    assert done.returncode == 2
    said = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    assert len(said) == 1 and "--translate-to" in said[0] and "OPENROUTER_API_KEY" in said[0], said
    assert not (tmp_path / "o" / "catalog").exists()


def test_cli_translates_and_checks_the_translation_model(api, tmp_path: Path) -> None:
    handle = api(fast_text=True)
    tones(tmp_path / "in", 1, 5)
    env = {**os.environ, "VOXFLOW_MAX_CHUNK_S": "4"}
    out = tmp_path / "o"
    bad = cli("transcribe", str(tmp_path / "in"), "--out", str(out), "--translate-to", "fr",
              "--translation-model", "acme/nope", env=env)  # fmt: skip
    said = [line for line in bad.stderr.splitlines() if line.startswith("aborted")]
    assert bad.returncode == 3 and len(said) == 1 and "--translation-model" in said[0] and "acme/nope" in said[0]
    assert "Traceback" not in bad.stderr
    assert not [e for e in handle.log() if e["endpoint"] in ("chat", "transcriptions")]
    env["VOXFLOW_TRANSLATE_TO"] = "fr"
    done = cli("transcribe", str(tmp_path / "in"), "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    assert_translated(out / "rec0.en.srt", out / "rec0.fr.srt", "fr")


def test_translation_cost_counts_against_the_budget(api, tmp_path: Path) -> None:
    """Measured first without a budget (the emulator's bill), then with room for the
    transcription and half the translation: the translation is not sent, the run aborts."""
    handle = api(fast_text=True)
    src = tmp_path / "in"
    tones(src, 1, 6)
    assert run_inline(plan_run(str(src), settings(tmp_path / "free", translate_to="fr"))).exit_code == 0
    bill = handle.log()
    transcription = sum(e["cost"] for e in bill if e["endpoint"] == "transcriptions")
    translation = sum(e["cost"] for e in bill if e["endpoint"] == "chat")
    assert transcription > 0 and translation > 0
    handle.reset()
    out = tmp_path / "out"
    budget = transcription + translation / 2
    summary = run_inline(plan_run(str(src), settings(out, translate_to="fr", budget_usd=budget)))
    assert summary.exit_code == 3 and "BudgetExceeded" in (summary.aborted or "")
    assert (out / "rec0.en.srt").exists() and not list(out.glob("rec0.fr.*"))
    assert not [e for e in handle.log() if e["endpoint"] == "chat"]
    assert json.loads(Path(summary.manifest).read_text())["cost_usd"] <= budget


def test_chat_survives_5xx_drops_malformed_answers_and_timeouts(api, tmp_path: Path) -> None:
    # seed 9: the first 6 draws (at least 6 requests are sent) hold malformed, drop, 500, slow
    faults = "500:0.15,503:0.1,529:0.05,drop:0.1,malformed:0.1,slow:0.1"
    handle = api(fast_text=True, chat_faults=faults, slow_ms=1500, retry_after=0.05, seed=9)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 3, 6)
    options = settings(out, translate_to="fr,de", max_attempts=15, request_timeout_s=1.0)
    summary = run_inline(plan_run(str(src), options))
    assert summary.exit_code == 0, summary.failures
    chat = [e for e in handle.log() if e["endpoint"] == "chat"]
    assert {"slow", "drop", "malformed"} <= {e["fault"] for e in chat}, Counter(e["fault"] for e in chat)
    for i in range(3):
        for target in ("fr", "de"):
            assert_translated(out / f"rec{i}.en.srt", out / f"rec{i}.{target}.srt", target)


def test_a_small_context_model_gets_the_cues_in_batches_numbered_apart(api, tmp_path: Path) -> None:
    from voxflow.testing.emulator import ChatModel

    handle = api(fast_text=True, chat_models=(ChatModel("acme/small", "Small", context_length=600),))
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 1, 40)
    summary = run_inline(plan_run(str(src), settings(out, translate_to="fr", translation_model="acme/small")))
    assert summary.exit_code == 0, summary.failures
    chat = [e for e in handle.log() if e["endpoint"] == "chat"]
    assert len(chat) >= 2 and all(e["status"] == 200 for e in chat), [(e["status"], e["lines"]) for e in chat]
    assert sum(e["lines"] for e in chat) == len(srt_cues(out / "rec0.en.srt"))
    assert_translated(out / "rec0.en.srt", out / "rec0.fr.srt", "fr")


@pytest.mark.parametrize(
    "answer",
    [
        "1. un\n2. deux",  # lost a line
        "1. un deux\n2. trois",  # two merged (and so one lost)
        "1. un\n2. deux\n3. trois\n4. quatre",  # added a line
        "1. un\n3. deux\n2. trois",  # out of order
        "1. un\n2.\n3. trois",  # an empty line
        "Voici:\n1. un\n2. deux\n3. trois",  # a preface
    ],
)
def test_an_answer_without_exactly_the_numbered_lines_sent_is_refused(answer: str) -> None:
    from voxflow.errors import LinesMismatch
    from voxflow.translation import parse_numbered

    assert parse_numbered("1. un\n\n2.  deux\n3. trois\n", 3) == ["un", "deux", "trois"]
    with pytest.raises(LinesMismatch):
        parse_numbered(answer, 3)


@given(
    st.lists(st.text(min_size=1, max_size=300), max_size=200),
    st.integers(min_value=64, max_value=200_000),
)
def test_batches_cover_every_line_once_in_order(lines: list[str], context: int) -> None:
    from voxflow.translation import MAX_LINES_PER_BATCH, batches

    ranges = batches(lines, context)
    assert [i for r in ranges for i in r] == list(range(len(lines)))
    assert all(0 < len(r) <= MAX_LINES_PER_BATCH for r in ranges)


def test_a_file_with_the_same_content_as_another_gets_its_translations_too(api, tmp_path: Path) -> None:
    api(fast_text=True)
    src, out = tmp_path / "in", tmp_path / "out"
    (first,) = tones(src, 1, 6)
    (src / "copy.flac").write_bytes(first.read_bytes())
    summary = run_inline(plan_run(str(src), settings(out, translate_to="fr")))
    assert summary.exit_code == 0 and summary.done == 2, summary.failures
    for stem in ("rec0", "copy"):
        assert_translated(out / f"{stem}.en.srt", out / f"{stem}.fr.srt", "fr")
    assert sorted(Path(r["path"]).name for r in catalog(out, "translations")) == ["copy.fr.srt", "rec0.fr.srt"]
    again = run_inline(plan_run(str(src), settings(out, translate_to="fr")))
    assert again.exit_code == 0 and again.translated == 0 and len(catalog(out, "translations")) == 2
