"""Parquet catalog written by pyarrow, read back by DuckDB; skip index and transcript rebuild."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb

from voxflow.catalog import CatalogIndex, CatalogWriter, load_transcript
from voxflow.models import Recording, RecordingResult, Segment, Word
from voxflow.sources import OutputTree


def _result(rid: str, status: str = "done", opts: str = "o1", finished: float = 0.0) -> RecordingResult:
    seg = Segment(0, 900, "Hello there.", (Word(0, 400, "Hello", 0.9), Word(450, 900, "there.", 0.8)))
    return RecordingResult(
        recording=Recording(f"/x/{rid}.wav", f"{rid}.wav", 10, recording_id=rid),
        status=status,
        model="local/tiny.en",
        options_hash=opts,
        duration_ms=1000,
        language="en",
        text="Hello there.",
        segments=(seg,),
        started_at=time.time(),
        finished_at=finished or time.time(),
        outputs=(f"/o/{rid}.en.srt",),
    )


def test_rows_are_readable_by_duckdb(tmp_path: Path) -> None:
    out = OutputTree(str(tmp_path))
    writer = CatalogWriter(out, "run1", flush_every=2)
    for rid in ("a", "b", "c"):
        writer.add_result(_result(rid))
    writer.flush()
    con = duckdb.connect()
    (count,) = con.execute(f"select count(*) from read_parquet('{tmp_path}/catalog/transcripts/*.parquet')").fetchone()
    assert count == 3
    assert len(list((tmp_path / "catalog" / "transcripts").glob("part-run1-*.parquet"))) == 2
    words = con.execute(
        f"select word, start_ms from read_parquet('{tmp_path}/catalog/words/*.parquet') "
        "where recording_id = 'b' order by seq"
    ).fetchall()
    assert words == [("Hello", 0), ("there.", 450)]


def test_index_keeps_latest_done_row_and_rebuilds_transcript(tmp_path: Path) -> None:
    out = OutputTree(str(tmp_path))
    first = CatalogWriter(out, "r1")
    first.add_result(_result("a", finished=1000.0))
    first.add_result(_result("z", status="failed"))
    first.flush()
    index = CatalogIndex.load(out)
    assert index.get("a", "o1") is not None and index.get("z", "o1") is None
    assert index.get("a", "other-options") is None
    rebuilt = load_transcript(out, index.get("a", "o1"))
    assert rebuilt.segments[0].words[1] == Word(450, 900, "there.", 0.8, None)
