"""``voxflow search``: the right recording and moment first, only committed rows, incremental index."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.conftest import ROOT, SAMPLES, normal_words
from tests.review_archive import Archive, build, duration_ms, word_time_ms
from voxflow.io.catalog import SCHEMAS, to_parquet

# phrase spoken in each clip (from sample_data/recordings/transcripts.json) → a word in it
PHRASES = {"jfk.flac": "ask not what your country", "beckett.wav": "fail better", "spk1_snt3.wav": "the air is pure"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    return build(tmp_path_factory.mktemp("search"))


def voxflow_search(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voxflow.cli", "search", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def hits(out: Path, query: str, *args: str) -> list[dict]:
    result = voxflow_search(out, query, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("name", sorted(PHRASES))
def test_phrase_ranks_its_recording_first_at_a_moment_inside_it(archive: Archive, name: str) -> None:
    phrase = PHRASES[name]
    assert phrase in normal_words(archive.references[name])  # the phrase is really spoken there
    found = hits(archive.out, f'"{phrase}"')
    assert found, f"no hit for {phrase!r}"
    first = found[0]
    assert first["rel_path"] == name and first["recording_id"] == archive.ids[name]
    assert 0 <= first["start_ms"] < duration_ms(archive.src / name)
    minutes, seconds = first["time"].split(":")
    assert int(minutes) * 60 + int(seconds) == first["start_ms"] // 1000
    assert phrase in normal_words(first["snippet"])


def test_the_moment_is_the_segment_where_the_words_are_spoken(archive: Archive) -> None:
    """The second half of JFK's line starts ≈ 8 s in: the hit is the segment holding "ask what"."""
    first = hits(archive.out, '"ask what you can do for your country"')[0]
    assert first["rel_path"] == "jfk.flac"
    spoken = word_time_ms(archive.out, archive.ids["jfk.flac"], "what")  # from the words table
    assert any(first["start_ms"] <= t < first["end_ms"] for t in spoken), (first, spoken)
    assert first["start_ms"] > 3000  # not the opening segment: the phrase is in the later one


def test_exact_phrase_ranks_above_scattered_words(archive: Archive) -> None:
    """Both JFK segments hold "you", "can", "do"; only one holds them in this order."""
    found = hits(archive.out, '"you can do for your country"')
    assert found[0]["phrase"] and not any(h["phrase"] for h in found[1:] if h["rel_path"] == "jfk.flac")


def test_terminal_table_names_recording_and_time(archive: Archive) -> None:
    result = voxflow_search(archive.out, "fail better")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "beckett.wav" in line)
    assert "00:0" in line


def test_no_match_and_odd_queries_are_not_errors(archive: Archive) -> None:
    assert hits(archive.out, "xylophone") == []
    for query in ['"unbalanced', "'; drop table postings; --", "%_*", '""']:  # blank: see below
        assert voxflow_search(archive.out, query).returncode == 0, query


def test_missing_catalog_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = voxflow_search(tmp_path / "nowhere", "anything")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--out" in result.stderr and "Traceback" not in result.stderr


def test_uncommitted_and_failed_rows_are_not_searchable(archive: Archive, tmp_path: Path) -> None:
    """Segments without a done transcripts row (a crash's leftovers) never show."""
    out = tmp_path / "out"
    shutil.copytree(archive.out, out, ignore=shutil.ignore_patterns(".voxflow"))
    leftover = [dict(recording_id="f" * 64, run_id="crashed", seq=0, start_ms=0, end_ms=1000, text="zebra crossing")]
    (out / "catalog/segments/part-crashed-w0-0001.parquet").write_bytes(to_parquet(leftover, SCHEMAS["segments"]))
    assert hits(out, "zebra") == []


def test_index_is_incremental_and_shows_only_the_latest_done_version(archive: Archive, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(archive.out, out, ignore=shutil.ignore_patterns(".voxflow"))
    assert hits(out, '"small dog"') == []
    indexed_before = set(_indexed(out))

    more = tmp_path / "more"  # a new recording, and jfk.flac again (--force: a second done version)
    more.mkdir()
    for name in ("spk1_snt1.wav", "jfk.flac"):
        shutil.copy(SAMPLES / name, more / name)
    _force_transcribe(more, out)

    assert hits(out, '"small dog"')[0]["rel_path"] == "spk1_snt1.wav"
    indexed_after = _indexed(out)
    assert len(indexed_after) == len(set(indexed_after))  # each part file indexed once
    assert indexed_before < set(indexed_after)  # the new parts were added to the old ones
    new_parts = {str(p) for t in ("transcripts", "segments") for p in (out / "catalog" / t).glob("*.parquet")}
    assert set(indexed_after) == new_parts
    runs = {pq.read_table(p).column("run_id")[0].as_py() for p in (out / "catalog/transcripts").glob("*.parquet")}
    assert len(runs) == 2
    jfk = [h for h in hits(out, "country", "--limit", "50") if h["rel_path"] == "jfk.flac"]
    latest = duckdb.execute(
        f"select s.start_ms from read_parquet('{out}/catalog/segments/*.parquet') s "
        "where s.recording_id = ? and lower(s.text) like '%country%' and s.run_id = ("
        f"  select max(run_id) from read_parquet('{out}/catalog/transcripts/*.parquet') where recording_id = ?)",
        [archive.ids["jfk.flac"]] * 2,
    ).fetchall()
    assert sorted(h["start_ms"] for h in jfk) == sorted(r[0] for r in latest)  # one version, not two


def _indexed(out: Path) -> list[str]:
    with duckdb.connect(str(out / ".voxflow/search.duckdb"), read_only=True) as db:
        return sorted(r[0] for r in db.execute("select path from indexed_parts").fetchall())


def _force_transcribe(src: Path, out: Path) -> None:
    from voxflow.settings import load_settings
    from voxflow.transcribe import plan_run, run_inline

    summary = run_inline(plan_run(str(src), load_settings(out=str(out), settle_seconds=0, force=True)))
    assert summary.exit_code == 0, summary


def test_an_empty_query_is_a_usage_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "voxflow.cli", "search", "  ", "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and proc.stderr.strip() == 'error: QUERY is empty: give words or "an exact phrase"'
