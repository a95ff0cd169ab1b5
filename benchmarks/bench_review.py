"""Search and review site at archive scale: 10 000 generated transcripts (≈ 100 000 segments).

Writes a catalog with the real Parquet schema (voxflow.io.catalog.to_parquet), then times:
building the search index once, a search (targets < 200 ms), an incremental refresh after one
more run, and the recordings page over HTTP (target < 300 ms). Prints the figures.

    uv run python benchmarks/bench_review.py [--recordings 10000]
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voxflow.io.catalog import SCHEMAS, to_parquet
from voxflow.review.search import SearchIndex

WORDS = [
    "budget",
    "roadmap",
    "hiring",
    "launch",
    "customer",
    "churn",
    "pricing",
    "design",
    "review",
    "deadline",
    "migration",
    "database",
    "outage",
    "security",
    "audit",
    "contract",
    "vendor",
    "marketing",
    "quarter",
    "revenue",
    "forecast",
    "team",
    "offsite",
    "backlog",
    "sprint",
    "release",
]
FILLER = ["we", "the", "a", "to", "of", "and", "that", "is", "it", "for", "on", "with", "as", "this", "be", "at", "so"]
PARTS = 20
PAGES = (
    "/recordings",
    "/recordings?sort=duration_s&dir=desc&page=50",
    "/recordings?status=failed&language=de",
    "/search?q=%22postpone+the+launch%22",
)


def generate(out: Path, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    per_part = n // PARTS
    for part in range(PARTS):
        run_id = f"2026010{part % 9 + 1}T000000Z-{part:06d}"
        transcripts, segments = [], []
        for i in range(part * per_part, (part + 1) * per_part):
            rid = f"{i:064x}"
            n_seg = rng.randint(5, 15)
            for seq in range(n_seg):
                words = [rng.choice(FILLER if rng.random() < 0.6 else WORDS) for _ in range(rng.randint(8, 20))]
                if i == 4242 and seq == 3:
                    words = ["so", "we", "decided", "to", "postpone", "the", "launch", "until", "the", "audit"]
                segments.append(dict(recording_id=rid, run_id=run_id, seq=seq, start_ms=seq * 30_000,
                                     end_ms=seq * 30_000 + 29_000, text=" ".join(words)))  # fmt: skip
            status = "failed" if i % 50 == 0 else "done"
            transcripts.append(dict(recording_id=rid, rel_path=f"meetings/{i // 100:03d}/m{i:05d}.mp3",
                                    source_uri=f"/archive/meetings/m{i:05d}.mp3", status=status,
                                    language=rng.choice(["en", "de", "fr"]), duration_s=n_seg * 30.0,
                                    cost_usd=0.0, run_id=run_id, finished_at=datetime(2026, 1, 1, tzinfo=UTC),
                                    segments_part=f"part-{run_id}-w0-0001.parquet"))  # fmt: skip
        for table, rows in (("segments", segments), ("transcripts", transcripts)):
            folder = out / "catalog" / table
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"part-{run_id}-w0-0001.parquet").write_bytes(to_parquet(rows, SCHEMAS[table]))


def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return times


def summary(times: list[float]) -> str:
    return f"median {statistics.median(times):.0f} ms, max {max(times):.0f} ms (n={len(times)})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recordings", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t = time.perf_counter()
        generate(out, args.recordings)
        print(f"catalog: {args.recordings} transcripts in {PARTS} parts, written in {time.perf_counter() - t:.1f} s")

        index = SearchIndex(out)
        t = time.perf_counter()
        index.refresh()
        n_docs = index.db.execute("select count(*) from live").fetchone()[0]
        print(f"index build: {n_docs} searchable segments in {time.perf_counter() - t:.1f} s")
        first = index.search('"postpone the launch"', 10)[0]
        assert first.rel_path == "meetings/042/m04242.mp3" and first.start_ms == 90_000, first
        for query in ('"postpone the launch"', "budget roadmap", "security audit deadline", "zzz"):
            print(f"search {query!r}: {summary(timed(lambda q=query: index.search(q, 20), 20))}")
        print(f"refresh with nothing new: {summary(timed(index.refresh, 10))}")
        index.close()

        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "voxflow.cli", "serve", str(out), "--port", str(port)], stderr=subprocess.DEVNULL
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait(base)
            with httpx.Client(base_url=base, timeout=60) as client:
                for path in PAGES:
                    client.get(path).raise_for_status()  # warm
                    print(f"GET {path}: {summary(timed(lambda p=path: client.get(p).raise_for_status(), 10))}")
        finally:
            proc.terminate()
            proc.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(base: str) -> None:
    for _ in range(300):
        try:
            httpx.get(base + "/static/app.js", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


if __name__ == "__main__":
    main()
