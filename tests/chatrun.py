"""What the chat tests (translations, minutes) share: distinct recordings and a catalog table
read back by DuckDB (their ``api`` fixture, an emulator for ``KEY``, is in conftest)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tests.conftest import ffmpeg

KEY = "sk-or-v1-chat-0123456789abcdef-SECRET"


def tones(folder: Path, count: int, seconds: int) -> list[Path]:
    """``count`` distinct recordings ``rec0.flac`` …: a rising tone, different for each."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"rec{i}.flac"
        ffmpeg("-f", "lavfi", "-i", f"aevalsrc=0.5*sin(2*PI*{300 + 11 * i}*t*(1+t/20)):s=16000:d={seconds}", str(path))
        paths.append(path)
    return paths


def catalog(out: Path, table: str) -> list[dict]:
    """Every row of a catalog table, read by DuckDB."""
    result = duckdb.connect().execute(f"select * from read_parquet('{out}/catalog/{table}/*.parquet')")
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]
