"""Peak memory of `voxflow transcribe` on a 1-minute and a 1-hour recording of real speech,
one command: `uv run python benchmarks/bench_memory.py [--minutes 1,60] [--threads 2] [--continuous]`.

Each recording (the sample clips looped with pauses, see tests/realspeech.py; with
``--continuous``, the engine's worst case: no pauses, so every piece is a full 30 s window, and
the multilingual clip's German in every pass, so Whisper base transcribes too) is transcribed
by the real CLI in a fresh process with the embedded engine. While it runs, the process tree
is sampled with psutil every 0.2 s (peak RSS of every process — the kernel's VmHWM, so no
short peak is missed: the CLI, Prefect's temporary server, ffmpeg …; and the sum over the
tree); when it exits, ``os.wait4`` gives the CLI's own peak (ru_maxrss of a child: the largest
of the CLI and the descendants it waited for). Prints the figures side by side with ratios,
the word error rate against the references, the wall time, and the longest piece of audio
faster-whisper was given (logged by a thin wrapper around the CLI).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.realspeech import CLIPS, CONTINUOUS_CLIPS, PAUSE_S, make_recording, run_cli, word_error_rate  # noqa: E402

SAMPLE_S = 0.2
WHOLE_RUN = "whole run (sum of its processes)"


@dataclass
class CliRun:
    """What one `voxflow transcribe` process cost and produced."""

    audio_s: float
    exit_code: int
    wall_s: float
    cli_maxrss_mb: float  # wait4 ru_maxrss of the CLI process
    peaks_mb: dict[str, float] = field(default_factory=dict)  # role → peak RSS sampled
    engine_inputs_s: list[float] = field(default_factory=list)
    wer: float = float("nan")

    @property
    def longest_input_s(self) -> float:
        return max(self.engine_inputs_s, default=0.0)


def _role(proc: psutil.Process, cli_pid: int) -> str:
    if proc.pid == cli_pid:
        return "voxflow CLI"
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "gone"
    if "ffmpeg" in cmd or "ffprobe" in cmd:
        return Path(proc.cmdline()[0]).name
    if "prefect" in cmd or "uvicorn" in cmd:
        return "prefect server"
    if "spawn_main" in cmd:
        return "engine process (Whisper)"
    if "resource_tracker" in cmd:
        return "multiprocessing resource tracker"
    return Path(proc.cmdline()[0]).name if proc.cmdline() else "child"


def _high_water_mark_mb(pid: int) -> float:
    """The kernel's peak RSS of a process so far (VmHWM): no peak falls between two samples."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _sample_tree(pid: int, peaks: dict[str, float], stop: threading.Event) -> None:
    """Peak RSS per role over the process tree of ``pid``, and of the tree's sum, until ``stop``."""
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            break
        total = 0.0
        for proc in tree:
            try:
                rss = proc.memory_info().rss / 2**20
                peak = max(rss, _high_water_mark_mb(proc.pid))
            except (psutil.Error, OSError):
                continue
            role = _role(proc, pid)
            total += rss
            if peak > 0:
                peaks[role] = max(peaks.get(role, 0.0), peak)
        peaks[WHOLE_RUN] = max(peaks.get(WHOLE_RUN, 0.0), total)
        stop.wait(SAMPLE_S)


def run_measured(source: Path, out: Path, env: dict[str, str]) -> CliRun:
    """Transcribe ``source`` in a fresh CLI process, sampling its process tree meanwhile."""
    peaks: dict[str, float] = {}
    stop = threading.Event()
    sampler: list[threading.Thread] = []

    def watch(pid: int) -> None:
        sampler.append(threading.Thread(target=_sample_tree, args=(pid, peaks, stop), daemon=True))
        sampler[0].start()

    started = time.perf_counter()
    outcome = run_cli(source, out, env, watch)
    wall = time.perf_counter() - started
    stop.set()
    sampler[0].join()
    if outcome.exit_code != 0:
        sys.stderr.write(outcome.stderr[-3000:])
    return CliRun(0.0, outcome.exit_code, wall, outcome.maxrss_mb, peaks, outcome.engine_inputs_s)


def measure(minutes: float, work: Path, env: dict[str, str], continuous: bool) -> CliRun:
    source = work / f"speech-{minutes:g}min"
    source.mkdir()
    clips, pause_s = (CONTINUOUS_CLIPS, 0.0) if continuous else (CLIPS, PAUSE_S)
    reference = make_recording(source / "meeting.flac", minutes, clips, pause_s)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(source / "meeting.flac")],
        capture_output=True,
        text=True,
        check=True,
    )
    out = work / f"out-{minutes:g}min"
    run = run_measured(source, out, env)
    run.audio_s = float(probe.stdout)
    run.wer = float("nan") if continuous else word_error_rate(out, reference)
    return run


def report(runs: list[CliRun]) -> None:
    first = runs[0]
    roles = sorted({r for run in runs for r in run.peaks_mb}, key=lambda r: (r != "voxflow CLI", r))
    header = "".join(f"{f'{run.audio_s / 60:.1f} min':>14}" for run in runs)
    ratio_head = "".join(f"{'ratio':>9}" for _ in runs[1:])
    wait4_label = "CLI peak RSS, wait4 ru_maxrss MB"
    width = 2 + max(len(label) for label in [wait4_label, *(f"peak RSS MB: {role}" for role in roles)])
    print(f"{'':<{width}}{header}{ratio_head}")

    def row(label: str, values: list[float], fmt: str = ".0f") -> None:
        cells = "".join(f"{v:>14{fmt}}" for v in values)
        ratios = "".join(f"{(v / values[0] if values[0] else float('nan')):>9.2f}" for v in values[1:])
        print(f"{label:<{width}}{cells}{ratios}")

    row(wait4_label, [r.cli_maxrss_mb for r in runs])
    for role in roles:
        row(f"peak RSS MB: {role}", [r.peaks_mb.get(role, 0.0) for r in runs])
    row("longest engine input s", [r.longest_input_s for r in runs], ".1f")
    row("engine calls", [float(len(r.engine_inputs_s)) for r in runs])
    row("WER vs reference", [r.wer for r in runs], ".3f")
    row("wall s", [r.wall_s for r in runs], ".1f")
    print("exit codes:", [r.exit_code for r in runs])
    limit = 1.25 * first.cli_maxrss_mb
    for run in runs[1:]:
        verdict = "ok" if run.cli_maxrss_mb <= limit else "OVER"
        print(f"{run.audio_s / 60:.1f} min vs {first.audio_s / 60:.1f} min: ≤ 1.25× is {limit:.0f} MB → {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", default="1,60", help="recording lengths, comma-separated")
    parser.add_argument("--threads", default="2", help="VOXFLOW_LOCAL_THREADS for the runs")
    parser.add_argument("--continuous", action="store_true", help="speech without pauses, German included")
    args = parser.parse_args()
    env = {**os.environ, "VOXFLOW_LOCAL_THREADS": args.threads, "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("OPENROUTER_API_KEY", None)  # the embedded engine
    with tempfile.TemporaryDirectory(prefix="voxflow-bench-memory-") as tmp:
        env.setdefault("PREFECT_HOME", f"{tmp}/prefect")
        runs = []
        for minutes in (float(m) for m in args.minutes.split(",")):
            runs.append(measure(minutes, Path(tmp), env, args.continuous))
            print(f"done: {runs[-1].audio_s / 60:.1f} min in {runs[-1].wall_s:.0f} s", flush=True)
        report(runs)


if __name__ == "__main__":
    main()
