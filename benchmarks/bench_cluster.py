"""A local batch on the embedded engine: one process vs a local Dask cluster, one command:

    uv run python benchmarks/bench_cluster.py [--copies 2] [--workers 2]

The six English sample clips × ``--copies`` (each copy re-levelled by ffmpeg so that no two
files are byte-identical twins, which voxflow would transcribe once), transcribed with
``local/tiny.en`` by the real CLI in a fresh process, timed as a whole:
  * one process:  ``voxflow transcribe SRC --out OUT --model local/tiny.en``
    (inference threads = cores);
  * the cluster:  the same with ``--cluster local:N`` (N worker processes, cores / N threads each).
Each mode is also run on one short clip (its fixed cost: start-up, cluster spawn, model load),
so that work = wall − fixed cost, and throughput = audio seconds per second of work.
Printed side by side: walls, fixed costs, throughputs (also per worker) and the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from clirun import timed_transcribe  # noqa: E402

SAMPLES = ROOT / "sample_data" / "recordings"
CLIPS = ("beckett.wav", "jfk.flac", "jfk.mp3", "jfk video.mp4", "spk1_snt1.wav", "spk1_snt3.wav")
MODEL = "local/tiny.en"


def make_batch(folder: Path, copies: int) -> float:
    """The clips × ``copies`` as 16 kHz WAV, each copy at its own level; total seconds of audio."""
    folder.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    for copy in range(copies):
        for n, clip in enumerate(CLIPS):
            out = folder / f"c{copy}-{n}-{Path(clip).stem.replace(' ', '_')}.wav"
            level = f"volume={1.0 - 0.04 * copy:.2f}"
            cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLES / clip), "-vn", "-af", level, "-ar", "16000"]
            subprocess.run([*cmd, "-ac", "1", str(out)], check=True)
            with wave.open(str(out)) as wav:
                seconds += wav.getnframes() / wav.getframerate()
    return seconds


def run_cli(source: Path, extra: list[str]) -> float:
    return timed_transcribe(source, ["--model", MODEL, *extra], dict(os.environ))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    modes = {"one process": [], f"--cluster local:{args.workers}": ["--cluster", f"local:{args.workers}"]}
    walls: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        batch, one = Path(tmp, "batch"), Path(tmp, "one")
        audio_s = make_batch(batch, args.copies)
        one.mkdir()
        (one / "short.wav").write_bytes(next(batch.glob("*spk1_snt3.wav")).read_bytes())
        run_cli(one, [])  # warm-up: model files, OS caches, uv's environment
        for name, extra in modes.items():
            walls[name] = (run_cli(one, extra), run_cli(batch, extra))
    print(f"{len(CLIPS) * args.copies} recordings, {audio_s:.1f} s of speech, {MODEL}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'':20} {'batch wall':>10} {'fixed cost':>10} {'work':>7} {'audio s/s':>9} {'per worker':>10}")
    for name, (fixed, wall) in walls.items():
        workers = args.workers if "cluster" in name else 1
        rate = audio_s / max(wall - fixed, 1e-9)
        print(f"{name:20} {wall:9.1f}s {fixed:9.1f}s {wall - fixed:6.1f}s {rate:9.2f} {rate / workers:10.2f}")
    (_, single), (_, cluster) = walls.values()
    print(f"ratio cluster / one process (batch wall): {cluster / single:.3f}")


if __name__ == "__main__":
    sys.exit(main())
