"""Text preparation on one-line text without punctuation (the worst case for sentence
splitting and clause cutting), one command:

    uv run python benchmarks/bench_text_prep.py [--sizes 100K,1M,5M]

For each size, a folder holding one .txt of that many bytes on a single line (random
lower-case words, no punctuation) is planned by the whole ``voxflow narrate --dry-run``
command in a subprocess (offline voice, so no network); printed: the wall time of the
command, and its exit code. Target: 5 MB in at most 30 s (pysbd took 42 s for 300 KB).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNITS = {"K": 1_000, "M": 1_000_000}


def one_line_text(n_bytes: int, seed: int = 7) -> str:
    """``n_bytes`` of random lower-case words separated by single spaces, no punctuation."""
    rng = random.Random(seed)
    vocabulary = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)
    ]
    words: list[str] = []
    size = 0
    while size < n_bytes:
        word = rng.choice(vocabulary)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:n_bytes].rstrip()


def parse_size(text: str) -> int:
    text = text.strip().upper()
    return int(float(text[:-1]) * UNITS[text[-1]]) if text[-1] in UNITS else int(text)


def dry_run_seconds(n_bytes: int, work: Path) -> tuple[float, int]:
    """(wall seconds, exit code) of ``voxflow narrate --dry-run`` on one such file."""
    folder = work / f"in-{n_bytes}"
    folder.mkdir()
    (folder / "one-line.txt").write_text(one_line_text(n_bytes), encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "voxflow.cli",
        "narrate",
        str(folder),
        "--out",
        str(work / f"out-{n_bytes}"),
        "--dry-run",
    ]
    env = {**os.environ, "VOXFLOW_MODEL": "local/en_US-joe-medium", "COLUMNS": "200"}
    env.pop("OPENROUTER_API_KEY", None)
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    return time.monotonic() - started, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100K,1M,5M", help="comma-separated sizes (bytes, K or M)")
    args = parser.parse_args()
    print(f"{'size':>8}  {'dry-run s':>9}  rc")
    with tempfile.TemporaryDirectory(prefix="voxflow-bench-prep-") as tmp:
        for label in args.sizes.split(","):
            seconds, code = dry_run_seconds(parse_size(label), Path(tmp))
            print(f"{label:>8}  {seconds:9.2f}  {code}", flush=True)


if __name__ == "__main__":
    main()
