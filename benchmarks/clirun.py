"""The one way the benchmarks run the real CLI: whole process, wall time, outputs checked."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed_transcribe(source: Path, args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of ``voxflow transcribe SOURCE --out NEW ARGS``; exits unless it succeeded
    and wrote one .srt per recording."""
    with tempfile.TemporaryDirectory() as out:
        cmd = ["uv", "run", "voxflow", "transcribe", str(source), "--out", out, *args]
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        written = len(list(Path(out).rglob("*.srt")))
    if proc.returncode != 0:
        raise SystemExit(f"voxflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    files = len(list(source.iterdir()))
    if written != files:
        raise SystemExit(f"voxflow wrote {written} subtitle files for {files} recordings")
    return wall
