"""A small real archive for the search and review tests: sample clips transcribed offline."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

from tests.conftest import SAMPLES, ffprobe_seconds, reference_texts
from voxflow.settings import load_settings
from voxflow.transcribe import plan_run, run_inline

CLIPS = ("jfk.flac", "beckett.wav", "spk1_snt3.wav")


@dataclass
class Archive:
    src: Path
    out: Path
    ids: dict[str, str]  # rel_path → recording_id (read back with DuckDB)
    references: dict[str, str]


def transcribe(src: Path, out: Path, failures: int = 0) -> None:
    """One offline run of the embedded engine over ``src`` into ``out``."""
    summary = run_inline(plan_run(str(src), load_settings(out=str(out), settle_seconds=0)))
    assert summary.failed == failures and summary.exit_code == (1 if failures else 0), summary


def build(root: Path, clips: tuple[str, ...] = CLIPS, broken: tuple[str, ...] = ()) -> Archive:
    """``clips`` transcribed; ``broken`` are files of noise bytes named like media (they fail)."""
    os.environ.setdefault("VOXFLOW_STATE_DIR", str(root / "state"))
    src, out = root / "src", root / "out"
    src.mkdir(parents=True)
    for name in clips:
        shutil.copy(SAMPLES / name, src / name)
    for name in broken:
        (src / name).write_bytes(os.urandom(4096))
    transcribe(src, out, failures=len(broken))
    rows = duckdb.sql(
        f"select rel_path, recording_id from read_parquet('{out}/catalog/transcripts/*.parquet') where status = 'done'"
    ).fetchall()
    return Archive(src, out, dict(rows), reference_texts())


def duration_ms(path: Path) -> float:
    """The media's duration in ms by ffprobe (an oracle independent of voxflow)."""
    return ffprobe_seconds(path) * 1000


def word_time_ms(out: Path, recording_id: str, word: str) -> list[int]:
    """Start times of ``word`` in the catalog's words table (not the search index)."""
    return [
        r[0]
        for r in duckdb.execute(
            f"select start_ms from read_parquet('{out}/catalog/words/*.parquet') "
            "where recording_id = ? and regexp_replace(lower(word), '[^a-z]', '', 'g') = ?",
            [recording_id, word],
        ).fetchall()
    ]


def build_named(root: Path, names: dict[bytes, str]) -> Archive:
    """Sample clips copied under raw byte names (``names``: file name → sample clip), then transcribed."""
    os.environ.setdefault("VOXFLOW_STATE_DIR", str(root / "state"))
    src, out = root / "src", root / "out"
    src.mkdir(parents=True)
    for name, clip in names.items():
        with open(os.path.join(os.fsencode(src), name), "wb") as copy:
            copy.write((SAMPLES / clip).read_bytes())
    transcribe(src, out)
    rows = duckdb.sql(f"select rel_path, recording_id from read_parquet('{out}/catalog/transcripts/*.parquet')")
    return Archive(src, out, dict(rows.fetchall()), reference_texts())
