"""Meeting minutes (--minutes) through OpenRouter chat, against the emulator on 127.0.0.1: its
minutes answer cites timestamps of the prompt's ``[mm:ss]`` lines (see voxflow.testing.emulator),
so the ``.minutes.md`` is read back with a regex and every time it cites is checked against the
recording's own SRT cues (parsed by the ``srt`` library); the catalog is read back by DuckDB, the
map-reduce and the cost by the emulator's own request log and bill."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import srt
from hypothesis import given
from hypothesis import strategies as st

from tests.chatrun import catalog, tones
from tests.conftest import ROOT
from voxflow.settings import load_settings
from voxflow.transcribe import plan_run, run_inline

STAMP = re.compile(r"\[(?:(\d+):)?(\d{1,2}):(\d{2})\]")
SLACK_S = 3
CHROMIUM = "/usr/bin/chromium"


def settings(out: Path, **extra):
    return load_settings(out=str(out), max_chunk_s=30, retry_backoff_s=0.05, **extra)


def sections(md: Path) -> dict[str, list[str]]:
    """``## Heading`` → the text of each paragraph or list item under it (read by markdown-it-py)."""
    from markdown_it import MarkdownIt

    found: dict[str, list[str]] = {}
    heading: str | None = None
    tokens = MarkdownIt().parse(md.read_text(encoding="utf-8"))
    for opening, inline in itertools.pairwise(tokens):
        if inline.type != "inline":
            continue
        if opening.type == "heading_open" and opening.tag == "h2":
            heading = inline.content
            found[heading] = []
        elif opening.type == "paragraph_open" and heading is not None:
            found[heading].append(inline.content)
    return found


def seconds(match: re.Match[str]) -> int:
    h, m, s = match.groups()
    return int(h or 0) * 3600 + int(m) * 60 + int(s)


def assert_cites_exist(md: Path, srt_path: Path, duration_s: float) -> list[int]:
    """Every ``[mm:ss]`` in the minutes falls inside the recording and near one of its cues."""
    cues = list(srt.parse(srt_path.read_text(encoding="utf-8")))
    cited = [seconds(m) for m in STAMP.finditer(md.read_text(encoding="utf-8"))]
    assert cited, md.read_text()
    for t in cited:
        assert 0 <= t <= duration_s
        near = [c for c in cues if c.start.total_seconds() - SLACK_S <= t <= c.end.total_seconds() + SLACK_S]
        assert near, f"[{t // 60:02d}:{t % 60:02d}] cites no cue of {srt_path.name}"
    return cited


def test_minutes_cite_only_moments_of_the_transcript_and_are_recorded(api, tmp_path: Path) -> None:
    handle = api(fast_text=True)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 2, 20)
    summary = run_inline(plan_run(str(src), settings(out, minutes=True)))
    assert summary.exit_code == 0, summary.failures
    transcripts = {r["rel_path"]: r for r in catalog(out, "transcripts")}
    for i in range(2):
        md = out / f"rec{i}.minutes.md"
        parts = sections(md)
        assert set(parts) == {"Summary", "Decisions", "Action items"}
        duration = transcripts[f"rec{i}.flac"]["duration_s"]
        assert_cites_exist(md, out / f"rec{i}.en.srt", duration)
        first = next(srt.parse((out / f"rec{i}.en.srt").read_text()))
        assert parts["Summary"][0].startswith("Discussed: ")  # the emulator quotes the first line …
        assert " ".join(first.content.split()).split()[0] in parts["Summary"][0]
        assert STAMP.search(parts["Summary"][0]) and seconds(STAMP.search(parts["Summary"][0])) == int(
            first.start.total_seconds()
        )  # … and cites its time
        (action,) = parts["Action items"]
        assert "owner: Alex" in action and "due: Friday" in action
        assert len(parts["Decisions"]) == 1 and STAMP.search(parts["Decisions"][0])
    rows = catalog(out, "minutes")
    assert sorted(r["rel_path"] for r in rows) == ["rec0.flac", "rec1.flac"]
    for r in rows:
        assert r["status"] == "done" and r["model"] == "openai/gpt-4o-mini" and r["cost_usd"] > 0
        assert Path(r["path"]).name == Path(r["rel_path"]).stem + ".minutes.md"
        (item,) = json.loads(r["action_items"])
        assert item["owner"] == "Alex" and item["due"] == "Friday" and item["cites"]
        assert r["summary"].startswith("Discussed: ") and json.loads(r["decisions"])[0]["cites"]
    chat = [e for e in handle.log() if e["endpoint"] == "chat"]
    assert len(chat) == 2 and all(e["minutes"] and e["status"] == 200 for e in chat)
    assert sum(r["cost_usd"] for r in rows) == pytest.approx(sum(e["cost"] for e in chat), abs=1e-9)
    manifest = json.loads(Path(summary.manifest).read_text())
    assert manifest["cost_usd"] == pytest.approx(sum(e.get("cost", 0) for e in handle.log()), abs=1e-6)
    assert sum(r["cost_usd"] for r in catalog(out, "transcripts")) == pytest.approx(manifest["cost_usd"], abs=1e-6)
    assert manifest["minutes"]["done"] == 2 and summary.minutes == 2


@pytest.mark.parametrize(
    ("model", "seconds_long"),
    [("acme/small", 150), ("meta-llama/llama-3.1-8b-instruct", 720)],  # contexts of 700 and 2048 tokens
)
def test_a_long_transcript_is_map_reduced_within_the_models_context(
    api, tmp_path: Path, model: str, seconds_long: int
) -> None:
    from voxflow.testing.emulator import ChatModel
    from voxflow.testing.emulator.config import DEFAULT_CHAT_MODELS

    models = (*DEFAULT_CHAT_MODELS, ChatModel("acme/small", "Small", context_length=700))
    small = next(m for m in models if m.id == model)
    handle = api(fast_text=True, chat_models=models)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 1, seconds_long)
    summary = run_inline(plan_run(str(src), settings(out, minutes=True, minutes_model=model)))
    assert summary.exit_code == 0, summary.failures
    chat = [e for e in handle.log() if e["endpoint"] == "chat"]
    assert all(e["status"] == 200 and e["minutes"] for e in chat)
    assert len(chat) >= 3, "at least two parts and one reduce"
    for e in chat:  # each prompt, with its answer, within the model's context
        assert e["prompt_tokens"] + e["completion_tokens"] <= small.context_length, e
    duration = catalog(out, "transcripts")[0]["duration_s"]
    cited = assert_cites_exist(out / "rec0.minutes.md", out / "rec0.en.srt", duration)
    assert max(cited) > seconds_long / 2, "the reduced minutes still cite the later parts"
    (row,) = catalog(out, "minutes")
    assert row["n_requests"] == len(chat)
    assert row["cost_usd"] == pytest.approx(sum(e["cost"] for e in chat), abs=1e-9)
    (rec,) = catalog(out, "transcripts")
    transcription = sum(e["cost"] for e in handle.log() if e["endpoint"] == "transcriptions")
    assert rec["cost_usd"] == pytest.approx(transcription + row["cost_usd"], abs=1e-9)


def test_an_answer_citing_a_moment_not_there_is_asked_again_once(api, tmp_path: Path) -> None:
    handle = api(fast_text=True, bad_cites=1)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 1, 15)
    summary = run_inline(plan_run(str(src), settings(out, minutes=True)))
    assert summary.exit_code == 0, summary.failures
    assert len([e for e in handle.log() if e["endpoint"] == "chat"]) == 2
    assert "59:59" not in (out / "rec0.minutes.md").read_text()
    assert len(sections(out / "rec0.minutes.md")["Action items"]) == 1
    assert_cites_exist(out / "rec0.minutes.md", out / "rec0.en.srt", 15)


def test_a_point_citing_a_moment_not_there_twice_is_dropped_with_a_warning(api, tmp_path: Path) -> None:
    handle = api(fast_text=True, bad_cites=None)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 1, 15)
    summary = run_inline(plan_run(str(src), settings(out, minutes=True)))
    assert summary.exit_code == 0, summary.failures
    assert len([e for e in handle.log() if e["endpoint"] == "chat"]) == 2
    md = out / "rec0.minutes.md"
    assert "59:59" not in md.read_text() and sections(md)["Action items"] == ["(none)"]
    assert_cites_exist(md, out / "rec0.en.srt", 15)
    (row,) = catalog(out, "minutes")
    assert json.loads(row["action_items"]) == [] and any("59:59" in w for w in row["warnings"])
    warnings = [w for r in catalog(out, "transcripts") for w in r["warnings"]]
    assert any("59:59" in w and "dropped" in w for w in warnings)


def test_an_answer_in_prose_is_asked_again_once(api, tmp_path: Path) -> None:
    handle = api(fast_text=True, prose_minutes=1)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 1, 10)
    summary = run_inline(plan_run(str(src), settings(out, minutes=True)))
    assert summary.exit_code == 0, summary.failures
    assert len([e for e in handle.log() if e["endpoint"] == "chat"]) == 2
    assert_cites_exist(out / "rec0.minutes.md", out / "rec0.en.srt", 10)


def test_answers_in_prose_twice_fail_that_recordings_minutes_only(api, tmp_path: Path) -> None:
    handle = api(fast_text=True, prose_minutes=2)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 2, 10)
    summary = run_inline(plan_run(str(src), settings(out, minutes=True, concurrency=1, workers=1)))
    assert summary.exit_code == 1 and summary.done == 2 and summary.minutes == 1 and summary.minutes_failed == 1
    assert len(list(out.glob("*.minutes.md"))) == 1 and len(list(out.glob("*.en.srt"))) == 2
    rows = {r["status"]: r for r in catalog(out, "minutes")}
    assert set(rows) == {"done", "failed"}
    failed = rows["failed"]
    assert failed["path"] is None and "minutes JSON" in failed["error_message"] and failed["n_requests"] == 2
    assert failed["cost_usd"] > 0, "the answers cost all the same"
    assert any(f["kind"] == "MinutesFailed" for f in summary.failures)
    chat = [e for e in handle.log() if e["endpoint"] == "chat"]
    assert sum(r["cost_usd"] for r in rows.values()) == pytest.approx(sum(e["cost"] for e in chat), abs=1e-9)


def test_minutes_survive_429s_and_malformed_bodies(api, tmp_path: Path) -> None:
    handle = api(fast_text=True, chat_faults="429:0.5,malformed:0.5", chat_fault_limit=3, retry_after=0.05)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 1, 10)
    summary = run_inline(plan_run(str(src), settings(out, minutes=True)))
    assert summary.exit_code == 0, summary.failures
    chat = [e for e in handle.log() if e["endpoint"] == "chat"]
    assert [e["status"] for e in chat][-1] == 200 and len(chat) == 4, [(e["status"], e.get("fault")) for e in chat]
    assert_cites_exist(out / "rec0.minutes.md", out / "rec0.en.srt", 10)
    (row,) = catalog(out, "minutes")
    assert row["cost_usd"] == pytest.approx(sum(e.get("cost", 0) for e in chat), abs=1e-9)


def test_a_rerun_makes_only_the_missing_minutes_from_the_catalog(api, tmp_path: Path) -> None:
    handle = api(fast_text=True)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 2, 10)
    assert run_inline(plan_run(str(src), settings(out))).exit_code == 0
    assert not list(out.glob("*.minutes.md"))
    handle.reset()
    again = run_inline(plan_run(str(src), settings(out, minutes=True)))
    assert again.exit_code == 0 and again.minutes == 2, again.failures
    log = handle.log()
    assert not [e for e in log if e["endpoint"] == "transcriptions"], "not transcribed again"
    assert len([e for e in log if e["endpoint"] == "chat"]) == 2
    for i in range(2):
        assert_cites_exist(out / f"rec{i}.minutes.md", out / f"rec{i}.en.srt", 10)
    manifest = json.loads(Path(again.manifest).read_text())
    assert manifest["cost_usd"] == pytest.approx(sum(e["cost"] for e in log if e["endpoint"] == "chat"), abs=1e-6)
    (out / "rec1.minutes.md").unlink()
    handle.reset()
    third = run_inline(plan_run(str(src), settings(out, minutes=True)))
    assert third.exit_code == 0 and third.minutes == 1
    assert len([e for e in handle.log() if e["endpoint"] == "chat"]) == 1
    handle.reset()
    fourth = run_inline(plan_run(str(src), settings(out, minutes=True)))
    assert fourth.exit_code == 0 and not [e for e in handle.log() if e["endpoint"] in ("chat", "transcriptions")]
    rows = catalog(out, "minutes")
    assert sorted(r["rel_path"] for r in rows) == ["rec0.flac", "rec1.flac", "rec1.flac"]


def test_a_minutes_file_voxflow_did_not_write_is_left_alone(api, tmp_path: Path) -> None:
    handle = api(fast_text=True)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 1, 8)
    out.mkdir()
    (out / "rec0.minutes.md").write_text("my own notes\n")
    summary = run_inline(plan_run(str(src), settings(out, minutes=True)))
    assert summary.exit_code == 0, summary.failures
    assert (out / "rec0.minutes.md").read_text() == "my own notes\n"
    assert any("rec0.minutes.md" in note for note in summary.left_alone)
    handle.reset()
    assert run_inline(plan_run(str(src), settings(out, minutes=True))).exit_code == 0
    assert not [e for e in handle.log() if e["endpoint"] == "chat"]


def test_minutes_cost_counts_against_the_budget(api, tmp_path: Path) -> None:
    handle = api(fast_text=True)
    src = tmp_path / "in"
    tones(src, 1, 8)
    assert run_inline(plan_run(str(src), settings(tmp_path / "free", minutes=True))).exit_code == 0
    bill = handle.log()
    transcription = sum(e["cost"] for e in bill if e["endpoint"] == "transcriptions")
    minutes = sum(e["cost"] for e in bill if e["endpoint"] == "chat")
    assert transcription > 0 and minutes > 0
    handle.reset()
    out = tmp_path / "out"
    budget = transcription + minutes / 2
    summary = run_inline(plan_run(str(src), settings(out, minutes=True, budget_usd=budget)))
    assert summary.exit_code == 3 and "BudgetExceeded" in (summary.aborted or "")
    assert (out / "rec0.en.srt").exists() and not (out / "rec0.minutes.md").exists()
    assert not [e for e in handle.log() if e["endpoint"] == "chat"]
    assert json.loads(Path(summary.manifest).read_text())["cost_usd"] <= budget


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "voxflow.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_without_a_key_minutes_are_refused_before_the_batch(tmp_path: Path) -> None:
    tones(tmp_path / "in", 1, 3)
    env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    env["VOXFLOW_MODEL"] = "local/tiny.en"
    done = cli("transcribe", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--minutes", env=env)
    assert done.returncode == 2
    said = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    assert len(said) == 1 and "--minutes" in said[0] and "OPENROUTER_API_KEY" in said[0], said
    assert not (tmp_path / "o" / "catalog").exists()


def test_cli_checks_the_minutes_model_then_writes_minutes(api, tmp_path: Path) -> None:
    handle = api(fast_text=True)
    tones(tmp_path / "in", 1, 6)
    env = {**os.environ, "VOXFLOW_MAX_CHUNK_S": "30"}
    out = tmp_path / "o"
    bad = cli("transcribe", str(tmp_path / "in"), "--out", str(out), "--minutes", "--minutes-model", "acme/nope",
              env=env)  # fmt: skip
    said = [line for line in bad.stderr.splitlines() if line.startswith("aborted")]
    assert bad.returncode == 3 and len(said) == 1 and "--minutes-model" in said[0] and "acme/nope" in said[0]
    assert "Traceback" not in bad.stderr
    assert not [e for e in handle.log() if e["endpoint"] in ("chat", "transcriptions")]
    env["VOXFLOW_MINUTES"] = "1"
    done = cli("transcribe", str(tmp_path / "in"), "--out", str(out), env=env)
    assert done.returncode == 0, done.stderr
    assert_cites_exist(out / "rec0.minutes.md", out / "rec0.en.srt", 6)


@given(st.integers(min_value=0, max_value=40 * 3600 * 1000))
def test_a_timestamp_reads_back_as_its_whole_second(ms: int) -> None:
    from voxflow.minutes import format_ts, parse_ts

    assert parse_ts(format_ts(ms)) == ms // 1000 * 1000
    assert parse_ts(f"[{format_ts(ms)}]") == ms // 1000 * 1000


@given(st.lists(st.text(min_size=1, max_size=400), max_size=120), st.integers(min_value=1, max_value=5000))
def test_parts_hold_every_line_once_in_order_within_room(lines: list[str], room: int) -> None:
    from voxflow.minutes import split_lines

    parts = split_lines(lines, room)
    assert [line for part in parts for line in part] == lines
    assert all(part and (len(part) == 1 or sum(len(x) + 1 for x in part) <= room) for part in parts)


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} missing: apt-get install chromium (./dev test)")
def test_a_minutes_citation_on_the_review_page_seeks_the_player(api, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from tests.test_review import start_server, stop

    api(fast_text=True)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 1, 20)
    assert run_inline(plan_run(str(src), settings(out, minutes=True))).exit_code == 0
    cited = {seconds(m) for m in STAMP.finditer((out / "rec0.minutes.md").read_text())}
    (rec,) = catalog(out, "transcripts")
    proc, base = start_server(out)
    errors: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.on("pageerror", lambda exc: errors.append(f"pageerror {exc}"))
            page.on("console", lambda msg: errors.append(f"console {msg.text}") if msg.type == "error" else None)
            assert page.goto(f"{base}/recording/{rec['recording_id']}").status == 200
            links = page.locator("#minutes a.cite")
            shown = [links.nth(i).inner_text() for i in range(links.count())]
            assert len(shown) == 3, shown  # the summary's, the decision's and the action item's
            assert {seconds(STAMP.fullmatch(s)) for s in shown} == cited  # type: ignore[arg-type]
            page.wait_for_function("document.getElementById('player').readyState >= 1")
            last = links.nth(links.count() - 1)
            target = seconds(STAMP.fullmatch(last.inner_text()))  # type: ignore[arg-type]
            assert target > 5
            last.click()
            page.wait_for_function(f"Math.abs(document.getElementById('player').currentTime - {target}) < 1.5")
            assert page.url.startswith(f"{base}/recording/"), "the link seeks in place"
            browser.close()
    finally:
        stop(proc)
    assert errors == [], errors


def test_a_file_with_the_same_content_as_another_gets_its_minutes_too(api, tmp_path: Path) -> None:
    handle = api(fast_text=True)
    src, out = tmp_path / "in", tmp_path / "out"
    (first,) = tones(src, 1, 8)
    (src / "copy.flac").write_bytes(first.read_bytes())
    summary = run_inline(plan_run(str(src), settings(out, minutes=True)))
    assert summary.exit_code == 0 and summary.done == 2, summary.failures
    for stem in ("rec0", "copy"):
        assert_cites_exist(out / f"{stem}.minutes.md", out / f"{stem}.en.srt", 8)
    assert sorted(Path(r["path"]).name for r in catalog(out, "minutes")) == ["copy.minutes.md", "rec0.minutes.md"]
    handle.reset()
    again = run_inline(plan_run(str(src), settings(out, minutes=True)))
    assert again.exit_code == 0 and again.minutes == 0 and len(catalog(out, "minutes")) == 2
    assert not [e for e in handle.log() if e["endpoint"] == "chat"]


def test_beside_source_the_minutes_go_beside_the_recording(api, tmp_path: Path) -> None:
    api(fast_text=True)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src / "team", 1, 8)
    summary = run_inline(plan_run(str(src), settings(out, minutes=True, beside_source=True)))
    assert summary.exit_code == 0, summary.failures
    assert_cites_exist(src / "team" / "rec0.minutes.md", src / "team" / "rec0.en.srt", 8)
    assert not list(out.rglob("*.minutes.md"))
