"""Start-up cost of small jobs: `uv run python benchmarks/bench_startup.py [--repeat 3]`.

Whole-process wall time, each command run the way a user runs it, side by side:
  bare      a Python process that loads faster-whisper tiny.en and transcribes the files
            (int8, VAD, word timestamps: what voxflow asks of it), writing nothing;
  voxflow   `voxflow transcribe FILES --out NEW --model local/tiny.en` with Prefect's temporary
            server (started by the run, ≈ 200 MB, dies with it);
  +server   the same after `voxflow server start` (the run finds the background server);
  1 proc    +server with VOXFLOW_LOCAL_PROCESSES=1: one engine process of two threads, as
            bare runs, so its gap to bare is voxflow's own overhead (the default, two
            engine processes of one thread, is what a user gets).
For one file (jfk.flac, 11 s) and for the demo folder (sample_data/recordings, 7 files).
Targets (issue 15): one file within bare + 4 s with a server running; the demo within 1.5× bare.
Prints the median of ``--repeat`` runs and the machine's load average, which skews every figure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_data" / "recordings"
BARE = """
import sys
from faster_whisper import WhisperModel
from voxflow.engines.whisper import resolve_stt_model
model = WhisperModel(resolve_stt_model("local/tiny.en"), device="cpu", compute_type="int8")
for path in sys.argv[1:]:
    segments, _ = model.transcribe(path, language="en", vad_filter=True, word_timestamps=True, beam_size=5)
    list(segments)
"""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def voxflow(source: Path, env: dict[str, str]) -> float:
    with tempfile.TemporaryDirectory() as out:
        return timed([sys.executable, "-m", "voxflow.cli", "transcribe", str(source), "--out", out,
                      "--model", "local/tiny.en"], env)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def median_of(repeat: int, run: object) -> float:
    return statistics.median(run() for _ in range(repeat))  # type: ignore[operator]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    env = {**os.environ, "PREFECT_HOME": str(home / "prefect")}
    env.pop("PREFECT_API_URL", None)
    one = home / "one"
    one.mkdir()
    shutil.copy(SAMPLES / "jfk.flac", one / "jfk.flac")
    demo_files = sorted(p for p in SAMPLES.iterdir() if p.is_file() and p.suffix != ".json")
    rows = []
    for label, folder, files in (("one file", one, [one / "jfk.flac"]), ("demo (7 files)", SAMPLES, demo_files)):
        bare = median_of(args.repeat, lambda f=files: timed([sys.executable, "-c", BARE, *map(str, f)], env))
        plain = median_of(args.repeat, lambda d=folder: voxflow(d, env))
        rows.append([label, bare, plain])
    cli = [sys.executable, "-m", "voxflow.cli", "server"]
    subprocess.run([*cli, "start", "--port", str(free_port())], env=env, check=True, capture_output=True)
    try:
        one_process = {**env, "VOXFLOW_LOCAL_PROCESSES": "1"}
        for row, folder in zip(rows, (one, SAMPLES), strict=True):
            row.append(median_of(args.repeat, lambda d=folder: voxflow(d, env)))
            row.append(median_of(args.repeat, lambda d=folder: voxflow(d, one_process)))
    finally:
        subprocess.run([*cli, "stop"], env=env, check=True, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    print(f"load average before/after: {os.getloadavg()[0]:.2f}; median of {args.repeat} runs, whole process")
    print(f"{'':16}{'bare':>8}{'voxflow':>10}{'+server':>10}{'1 proc':>8}{'ratio':>8}{'+server ratio':>15}"
          f"{'1 proc ratio':>14}{'+server - bare':>16}")  # fmt: skip
    for label, bare, plain, served, single in rows:
        print(f"{label:16}{bare:8.1f}{plain:10.1f}{served:10.1f}{single:8.1f}{plain / bare:8.2f}{served / bare:15.2f}"
              f"{single / bare:14.2f}{served - bare:15.1f}s")  # fmt: skip


if __name__ == "__main__":
    main()
