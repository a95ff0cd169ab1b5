"""Per-file overhead: many short recordings against the OpenRouter emulator, one command:

    uv run python benchmarks/bench_short_files.py [--files 160] [--seconds 8] [--latency-ms 2000]

The recordings are distinct cuts of real speech from sample_data/recordings (FLAC, 44.1 kHz
stereo, so every file really needs decoding, downmixing and resampling). The emulator
(fast_text mode: Whisper's CPU time is not measured) runs in this process with a fixed
latency per request; each voxflow run is the real CLI in a subprocess, timed as a whole
(interpreter start, Prefect, scan, catalog). Every recording is one chunk, so:
  * physical limit = ceil(files / concurrency) × latency;
  * one-file run   = the fixed cost of a command (best of two, after a warm-up run);
  * ratio          = batch wall / (physical limit + one-file run), target ≤ 1.25.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clirun import timed_transcribe  # noqa: E402

from voxflow.testing.emulator import start_emulator_in_thread  # noqa: E402

KEY = "sk-or-bench"
MODEL = "openai/whisper-large-v3"
SAMPLES = ROOT / "sample_data" / "recordings"
SPEECH = (("multilingual.mp3", 59.9), ("jfk.flac", 11.0), ("beckett.wav", 9.96))


def make_recordings(folder: Path, files: int, seconds: float) -> None:
    """``files`` distinct cuts of ``seconds`` each, cycling over the speech samples and offsets."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        name, length = SPEECH[i % len(SPEECH)]
        room = max(0.0, length - seconds)
        offset = (i // len(SPEECH)) * 0.37 % room if room else 0.0
        cut = ["-ss", f"{offset:.3f}", "-t", str(seconds), "-i", str(SAMPLES / name)]
        level = f"volume={0.8 + (i % 7) * 0.03:.2f}"
        out = str(folder / f"r{i:03d}.flac")
        cmd = ["ffmpeg", "-v", "error", "-y", *cut, "-af", level, "-ar", "44100", "-ac", "2", out]
        subprocess.run(cmd, check=True)


def run_cli(source: Path, url: str, concurrency: int) -> float:
    env = {**os.environ, "OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": url}
    return timed_transcribe(source, ["--concurrency", str(concurrency), "--model", MODEL], env)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=160)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--latency-ms", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    with tempfile.TemporaryDirectory() as tmp:
        one, batch = Path(tmp, "one"), Path(tmp, "batch")
        make_recordings(one, 1, args.seconds)
        make_recordings(batch, args.files, args.seconds)
        with start_emulator_in_thread(keys=(KEY,), fast_text=True, latency_ms=args.latency_ms) as emu:
            run_cli(one, emu.url, args.concurrency)  # warm the OS caches and uv's environment
            one_file = min(run_cli(one, emu.url, args.concurrency) for _ in range(2))
            emu.reset()
            wall = run_cli(batch, emu.url, args.concurrency)
            requests = sum(e["endpoint"] == "transcriptions" and e["status"] == 200 for e in emu.log())
    limit = math.ceil(args.files / args.concurrency) * latency
    print(f"{args.files} recordings of {args.seconds:g} s, {requests} requests answered, "
          f"latency {latency:.2f} s, concurrency {args.concurrency}")  # fmt: skip
    print(f"{'physical limit':>16} {'one-file run':>14} {'batch wall':>12} {'ratio':>7}  (target ≤ 1.25)")
    print(f"{limit:15.1f}s {one_file:13.1f}s {wall:11.1f}s {wall / (limit + one_file):7.3f}")


if __name__ == "__main__":
    main()
