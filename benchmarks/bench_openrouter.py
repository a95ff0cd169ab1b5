"""Batch transcription against the OpenRouter emulator at a fixed latency, one command:

    uv run python benchmarks/bench_openrouter.py [--latency-ms 1000] [--concurrency 16]

The emulator (fast_text mode, so Whisper's CPU time is not measured) runs in this process;
each voxflow run is the real CLI in a subprocess (Prefect flow, ephemeral server). Printed,
side by side from one run:
  * start-up: wall of a one-file, one-chunk run of the same command;
  * physical limit = chunks × latency / concurrency + start-up;
  * the batch wall and its ratio to the physical limit (target ≤ 1.25);
  * the speed-up over serial requests (--concurrency 1 on a 16-chunk subset, per chunk);
  * the same batch with 20 % injected faults (429 with Retry-After, 5xx, 524, 529, drops).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voxflow.testing.emulator import start_emulator_in_thread  # noqa: E402

KEY = "sk-or-bench"
FAULTS_20 = "429:0.05,500:0.04,502:0.03,503:0.03,524:0.02,529:0.02,drop:0.01"
CHUNK_S = 5


def make_recordings(folder: Path, files: int, seconds: int, offset: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        tone = f"aevalsrc=0.5*sin(2*PI*{150 + 5 * (i + offset)}*t*(1+t/30)):s=16000:d={seconds}"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", tone, str(folder / f"m{i:03d}.flac")], check=True
        )


def run_cli(source: Path, url: str, concurrency: int) -> float:
    env = {
        **os.environ,
        "OPENROUTER_API_KEY": KEY,
        "OPENROUTER_BASE_URL": url,
        "VOXFLOW_MAX_CHUNK_S": str(CHUNK_S),
        "VOXFLOW_RETRY_BACKOFF_S": "0.25",
        "VOXFLOW_MAX_ATTEMPTS": "10",
    }
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        proc = subprocess.run(
            ["uv", "run", "voxflow", "transcribe", str(source), "--out", out, "--concurrency", str(concurrency)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"voxflow failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def _answered(log: list[dict]) -> int:
    """Chunks answered: distinct audio payloads that got a 200 from the transcription endpoint."""
    return len({e["sha256"] for e in log if e["endpoint"] == "transcriptions" and e["status"] == 200})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-ms", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--chunks-per-file", type=int, default=4)
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    with tempfile.TemporaryDirectory() as tmp:
        one, batch, serial = Path(tmp, "one"), Path(tmp, "batch"), Path(tmp, "serial")
        make_recordings(one, 1, CHUNK_S - 1, offset=500)
        make_recordings(batch, args.files, args.chunks_per_file * CHUNK_S - 1)
        make_recordings(serial, 4, 4 * CHUNK_S - 1, offset=300)
        with start_emulator_in_thread(keys=(KEY,), fast_text=True, latency_ms=args.latency_ms) as emu:
            startup = run_cli(one, emu.url, args.concurrency)
            emu.reset()
            wall = run_cli(batch, emu.url, args.concurrency)
            chunks = _answered(emu.log())
            emu.reset()
            serial_wall = run_cli(serial, emu.url, 1)
            serial_chunks = _answered(emu.log())
        with start_emulator_in_thread(
            keys=(KEY,), fast_text=True, latency_ms=args.latency_ms, faults=FAULTS_20, retry_after=1.0, seed=11
        ) as emu:
            faulty = run_cli(batch, emu.url, args.concurrency)
            log = [e for e in emu.log() if e["endpoint"] == "transcriptions"]
    limit = chunks * latency / args.concurrency + startup
    serial_per_chunk = (serial_wall - startup) / serial_chunks
    print(
        f"chunks: {chunks} (cut at the quietest points, ≤ {CHUNK_S} s, from {args.files} files of "
        f"{args.chunks_per_file * CHUNK_S - 1} s), latency {latency:.2f} s, concurrency {args.concurrency}"
    )
    print(f"start-up (one-file run):        {startup:6.1f} s")
    print(
        f"physical limit:                  {limit:6.1f} s  (= {chunks} × {latency:.2f} / {args.concurrency} + start-up)"
    )
    print(f"batch wall:                      {wall:6.1f} s  ratio to limit {wall / limit:.3f}  (target ≤ 1.25)")
    print(
        f"work phase (wall − start-up):    {wall - startup:6.1f} s  "
        f"vs ideal {chunks * latency / args.concurrency:.1f} s"
    )
    print(
        f"serial: {serial_per_chunk:.2f} s per chunk → {serial_per_chunk * chunks:.0f} s for the batch; "
        f"speed-up {serial_per_chunk * chunks / max(wall - startup, 1e-9):.1f}× (work phase), "
        f"{(serial_per_chunk * chunks + startup) / wall:.1f}× (whole command)"
    )
    faults = sum(e["fault"] is not None for e in log)
    print(
        f"20 % faults: wall {faulty:6.1f} s  ratio to limit {faulty / limit:.3f}; "
        f"{len(log)} requests, {faults} faults injected ({faults / len(log):.0%})"
    )


if __name__ == "__main__":
    main()
