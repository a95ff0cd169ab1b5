"""Output ownership: voxflow only ever replaces files it wrote itself (recorded with their
sha256 in the catalog's ``outputs`` table), never trusts a file's mere existence, and gives a
recording whose sidecar names another recording owns a deterministic other name. Checked on real
clips with the embedded engine; files read back with hashlib, the srt library and DuckDB."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import srt

from voxflow.settings import load_settings
from voxflow.transcribe import open_run, plan_run, run_inline, transcribe_recording

USER_SRT = "1\n00:00:01,000 --> 00:00:04,000\nMy own careful subtitle.\n\n"


def words(path: Path) -> str:
    return " ".join("".join(c if c.isalnum() or c.isspace() else " " for c in path.read_text().lower()).split())


def ledger(out: Path) -> dict[str, str]:
    """absolute path → sha256 of the latest claim, read by DuckDB (the ledger keeps paths under
    the output folder relative to it)."""
    rows = duckdb.sql(
        f"select path, sha256 from read_parquet('{out}/catalog/outputs/*.parquet') order by written_at"
    ).fetchall()
    return {(path if path.startswith("/") else f"{out}/{path}"): sha for path, sha in rows}


def test_same_stem_in_separate_runs_keeps_both_transcripts(samples: Path, tmp_path: Path) -> None:
    """talk.wav, then talk.mp3, then talk.wav again, each as its own single-file run into one --out."""
    dd, out = tmp_path / "dd", tmp_path / "o"
    dd.mkdir()
    shutil.copy(samples / "beckett.wav", dd / "talk.wav")
    shutil.copy(samples / "jfk.mp3", dd / "talk.mp3")
    settings = load_settings(out=str(out), formats="txt,srt")

    assert run_inline(plan_run(str(dd / "talk.wav"), settings)).done == 1
    assert "fail better" in words(out / "talk.en.txt")
    second = run_inline(plan_run(str(dd / "talk.mp3"), settings))
    assert second.done == 1
    assert "fail better" in words(out / "talk.en.txt"), "the second recording overwrote the first's transcript"
    assert second.left_alone == []
    assert "ask not what your country" in words(out / "talk.mp3.en.txt")
    cues = list(srt.parse((out / "talk.mp3.en.srt").read_text()))
    assert "country" in " ".join(c.content for c in cues).lower()

    for name in ("talk.wav", "talk.mp3"):  # each rerun skips: its own files are intact
        again = plan_run(str(dd / name), settings)
        assert (len(again.todo), len(again.skipped), len(again.restore)) == (0, 1, 0), name
        run_inline(again)
    assert "fail better" in words(out / "talk.en.txt")
    assert "ask not what your country" in words(out / "talk.mp3.en.txt")

    claims = ledger(out)  # the ledger holds what is on disk, hashed by an independent reader
    for name in ("talk.en.txt", "talk.en.srt", "talk.mp3.en.txt", "talk.mp3.en.srt"):
        assert claims[str(out / name)] == hashlib.sha256((out / name).read_bytes()).hexdigest(), name


def test_an_existing_sidecar_is_not_trusted_by_its_existence(samples: Path, tmp_path: Path) -> None:
    """A transcript file voxflow wrote and someone then replaced is not 'done': it is left alone,
    reported, and the run still writes the recording's other outputs."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(samples / "beckett.wav", src / "talk.wav")
    settings = load_settings(out=str(out), formats="txt,json")
    run_inline(plan_run(str(src), settings))
    (out / "talk.en.txt").write_text("someone else's notes\n")
    (out / "talk.en.json").unlink()
    plan = plan_run(str(src), settings)
    assert len(plan.restore) == 1
    summary = run_inline(plan)
    assert (out / "talk.en.txt").read_text() == "someone else's notes\n"
    assert "fail better" in json.loads((out / "talk.en.json").read_text())["text"].lower()
    assert summary.left_alone == ["left alone: talk.en.txt (not written by voxflow; --overwrite to replace)"]
    manifest = json.loads(Path(summary.manifest).read_text())
    assert manifest["left_alone"] == summary.left_alone


def test_beside_source_never_overwrites_a_users_subtitle(samples: Path, tmp_path: Path) -> None:
    lib = tmp_path / "Movies" / "Speech (1961)"
    lib.mkdir(parents=True)
    shutil.copy(samples / "jfk video.mp4", lib / "Movie.mp4")
    (lib / "Movie.en.srt").write_text(USER_SRT)  # made by hand, or by Bazarr
    settings = load_settings(out=str(tmp_path / "voxflow"), beside_source=True, formats="srt,txt")

    first = run_inline(plan_run(str(lib.parent), settings))
    assert first.done == 1 and first.exit_code == 0
    assert (lib / "Movie.en.srt").read_text() == USER_SRT
    assert "ask not what your country" in words(lib / "Movie.en.txt")
    note = "left alone: Speech (1961)/Movie.en.srt (not written by voxflow; --overwrite to replace)"
    assert first.left_alone == [note]
    rows = duckdb.sql(
        f"select warnings, outputs from read_parquet('{tmp_path}/voxflow/catalog/transcripts/*.parquet')"
    ).fetchall()
    assert note in rows[0][0] and rows[0][1] == [str(lib / "Movie.en.txt")]

    rerun = plan_run(str(lib.parent), settings)  # nothing to do, the user's file still reported
    assert len(rerun.skipped) == 1 and rerun.left_alone == [note]
    assert run_inline(rerun).left_alone == [note]
    assert (lib / "Movie.en.srt").read_text() == USER_SRT

    forced = plan_run(str(lib.parent), load_settings(**{**settings.model_dump(), "overwrite": True}))
    assert len(forced.restore) == 1
    assert run_inline(forced).left_alone == []
    cues = list(srt.parse((lib / "Movie.en.srt").read_text()))
    assert "country" in " ".join(c.content for c in cues).lower()
    after = plan_run(str(lib.parent), settings)  # now voxflow's own file: plain skip
    assert len(after.skipped) == 1 and after.left_alone == []


def test_files_of_a_run_killed_before_its_catalog_flush_are_still_voxflows(samples: Path, tmp_path: Path) -> None:
    """Claims are journaled before the files are written: a run that dies before its catalog
    flush leaves files the next run rewrites (not 'foreign' ones it must leave alone)."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(samples / "spk1_snt3.wav", src / "a.wav")
    settings = load_settings(out=str(out), formats="txt")
    plan = plan_run(str(src), settings)
    ctx = open_run(plan)
    result = transcribe_recording(plan.todo[0], ctx.spec).result  # then "killed": no finish_run
    assert result is not None and result.status == "done" and (out / "a.en.txt").exists()
    assert not list(out.glob("catalog/transcripts/*.parquet"))

    again = plan_run(str(src), settings)
    assert len(again.todo) == 1
    summary = run_inline(again)
    assert summary.done == 1 and summary.left_alone == []
    claims = ledger(out)
    assert claims[str(out / "a.en.txt")] == hashlib.sha256((out / "a.en.txt").read_bytes()).hexdigest()
    assert not list((out / ".voxflow" / "outputs-pending").glob("*.jsonl")), "journals folded into the catalog"


def test_cli_reports_left_alone_files_and_overwrite_replaces_them(samples: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from voxflow.cli import app

    lib, out = tmp_path / "lib", tmp_path / "catalog-home"
    lib.mkdir()
    shutil.copy(samples / "spk1_snt1.wav", lib / "Clip.wav")
    args = ["transcribe", str(lib), "--out", str(out), "--beside-source", "--formats", "srt"]
    run_inline(plan_run(str(lib), load_settings(out=str(out), beside_source=True, formats="srt")))
    (lib / "Clip.en.srt").write_text(USER_SRT)  # the user replaced voxflow's file with their own
    kept = CliRunner(env={"COLUMNS": "1000"}).invoke(app, args)
    assert kept.exit_code == 0, kept.output
    assert "left alone: Clip.en.srt (not written by voxflow; --overwrite to replace)" in kept.output
    assert (lib / "Clip.en.srt").read_text() == USER_SRT
    replaced = CliRunner(env={"COLUMNS": "1000"}).invoke(app, [*args, "--overwrite"])
    assert replaced.exit_code == 0 and "1 to restore" in replaced.output, replaced.output
    cues = list(srt.parse((lib / "Clip.en.srt").read_text()))
    assert "small dog" in " ".join(c.content for c in cues).lower()


def test_voxflow_knows_its_own_files_under_any_name_and_in_a_moved_output(samples: Path, tmp_path: Path) -> None:
    """A name that is not UTF-8, and an output folder copied elsewhere: reruns still see the
    sidecars as voxflow's (nothing left alone), and a changed recording rewrites them."""
    src = tmp_path / "in"
    src.mkdir()
    name = b"caf\xe9.wav"
    shutil.copy(samples / "spk1_snt3.wav", bytes(src) + b"/" + name)
    out = tmp_path / "out"
    settings = load_settings(out=str(out), model="local/tiny.en", formats="txt")
    assert run_inline(plan_run(str(src), settings)).done == 1
    again = run_inline(plan_run(str(src), settings))
    assert (again.skipped, again.left_alone) == (1, []), again.left_alone

    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    elsewhere = run_inline(plan_run(str(src), load_settings(out=str(moved), model="local/tiny.en", formats="txt")))
    assert (elsewhere.skipped, elsewhere.left_alone) == (1, []), elsewhere.left_alone

    shutil.copy(samples / "spk1_snt1.wav", bytes(src) + b"/" + name)  # new content, same name
    changed = run_inline(plan_run(str(src), settings))
    assert (changed.done, changed.left_alone) == (1, []), changed.left_alone
    sidecars = sorted(out.glob("caf*.en.txt"))
    assert len(sidecars) == 1, sidecars
    txt = sidecars[0]
    assert "dog" in txt.read_text().lower(), "the sidecar follows the recording's new content"
