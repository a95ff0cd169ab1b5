"""Long recordings made of real speech: the sample clips with exact references, looped with
short pauses between them by ffmpeg, and the reference text of the whole recording.

``run_cli`` runs the real ``voxflow transcribe`` in a fresh process and measures it from the
outside: its peak RSS from ``os.wait4`` and the length of every array faster-whisper was given.

Used by tests/test_memory.py and benchmarks/bench_memory.py (an hour needs no committed file);
``alternating_recording`` (German and English every few seconds) by tests/test_languages.py and
benchmarks/bench_languages.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ffmpeg, ffprobe_seconds, normal_words

SAMPLES = Path(__file__).resolve().parent.parent / "sample_data" / "recordings"
CLIPS = ("jfk.flac", "spk1_snt1.wav", "beckett.wav", "spk1_snt3.wav")
PAUSE_S = 1.2  # between clips: a pause a speaker makes, long enough for silencedetect


CONTINUOUS_CLIPS = (*CLIPS, "multilingual.mp3")  # no reference for its German: WER not comparable


def cycle_seconds(clips: tuple[str, ...] = CLIPS, pause_s: float = PAUSE_S) -> float:
    """Length of one pass over the clips, pauses included."""
    return sum(ffprobe_seconds(SAMPLES / c) + pause_s for c in clips)


def make_recording(dest: Path, minutes: float, clips: tuple[str, ...] = CLIPS, pause_s: float = PAUSE_S) -> str:
    """Write a FLAC of whole passes over ``clips`` (``pause_s`` after each) lasting about
    ``minutes`` (at least one pass) and return its reference text."""
    refs = json.loads((SAMPLES / "transcripts.json").read_text())
    cycles = max(1, round(minutes * 60 / cycle_seconds(clips, pause_s)))
    cycle = dest.with_suffix(".cycle.wav")
    inputs: list[str] = []
    parts = []
    for i, clip in enumerate(clips):
        inputs += ["-i", str(SAMPLES / clip)]
        pad = f",apad=pad_dur={pause_s}" if pause_s else ""
        parts.append(f"[{i}:a]aresample=16000,aformat=sample_fmts=s16:channel_layouts=mono{pad}[c{i}]")
    joined = "".join(f"[c{i}]" for i in range(len(clips)))
    graph = ";".join(parts) + f";{joined}concat=n={len(clips)}:v=0:a=1[out]"
    _ffmpeg(*inputs, "-filter_complex", graph, "-map", "[out]", str(cycle))
    _ffmpeg("-stream_loop", str(cycles - 1), "-i", str(cycle), "-c:a", "flac", str(dest))
    cycle.unlink()
    return " ".join([" ".join(refs[c]["text"] for c in clips)] * cycles)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True)


# The real CLI; a thin wrapper only logs the length of every array faster-whisper transcribes.
CLI_WITH_ENGINE_LOG = Path(__file__).with_name("cli_with_engine_log.py")


# Runs a command and writes its wait4 ru_maxrss (KB) to argv[1]. Why a launcher: Linux counts
# a forked child's peak RSS from its parent's RSS at the fork (ru_maxrss of `true` run from a
# process holding 800 MB: 813 MB), so a CLI started straight from a grown pytest process would
# report pytest's size. Started from this small process, the CLI's figure is its own: the
# largest of the CLI and every descendant it waited for (the engine process, ffmpeg, Prefect's
# temporary server).
LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


@dataclass
class CliOutcome:
    exit_code: int
    maxrss_mb: float  # ru_maxrss of the CLI (and the descendants it waited for) from wait4
    engine_inputs_s: list[float]  # seconds of audio per faster-whisper call
    stderr: str


def run_cli(source: Path, out: Path, env: dict[str, str], watch: Callable[[int], None] | None = None) -> CliOutcome:
    """``voxflow transcribe SOURCE --out OUT`` in a fresh process; ``watch(pid)`` is called
    with the CLI's pid once it has started (the benchmark samples its process tree)."""
    log, maxrss = out.parent / f"{out.name}.engine-inputs", out.parent / f"{out.name}.maxrss"
    log.unlink(missing_ok=True)
    cli = [sys.executable, str(CLI_WITH_ENGINE_LOG), "transcribe", str(source), "--out", str(out)]
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(maxrss), *cli],
        cwd=SAMPLES.parent.parent,
        env={**env, "ENGINE_INPUT_LOG": str(log)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if watch:
        watch(_first_child(launcher.pid))
    stderr = launcher.stderr.read().decode(errors="replace") if launcher.stderr else ""  # until the CLI closes it
    code = launcher.wait()
    inputs = [float(x) for x in log.read_text().split()] if log.exists() else []
    return CliOutcome(code, int(maxrss.read_text()) / 1024, inputs, stderr)


def _first_child(pid: int) -> int:
    import psutil

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = psutil.Process(pid).children()
        if children:
            return children[0].pid
        time.sleep(0.01)
    raise RuntimeError("the launcher never started the CLI")


def word_error_rate(out: Path, reference: str) -> float:
    """WER of the .txt sidecars under ``out`` against ``reference`` (jiwer)."""
    import jiwer

    hypothesis = " ".join(t.read_text() for t in sorted(out.rglob("*.txt")))
    return jiwer.wer(normal_words(reference), normal_words(hypothesis))


# German sentences of multilingual.mp3 and English clips, taken in turn, 0.7 s apart: a recording
# that switches language every few seconds, so every speech window of Whisper holds both
ALTERNATING = (
    ("multilingual.mp3", 31.8, 35.9, "de"),
    ("spk1_snt1.wav", 0.0, None, "en"),
    ("multilingual.mp3", 36.2, 41.3, "de"),
    ("spk1_snt3.wav", 0.0, None, "en"),
    ("multilingual.mp3", 42.4, 47.4, "de"),
    ("multilingual.mp3", 21.3, 29.0, "en"),
    ("multilingual.mp3", 47.7, 53.7, "de"),
    ("beckett.wav", 0.0, None, "en"),
    ("multilingual.mp3", 53.9, 59.7, "de"),
    ("jfk.flac", 0.0, None, "en"),
)
GAP_S = 0.7


def alternating_recording(path: Path) -> list[tuple[float, float, str]]:
    """Write ALTERNATING as one 16 kHz WAV with ffmpeg; → (start s, end s, language) of each stretch."""
    inputs, chains, spans, at = [], [], [], 0.0
    for n, (name, start, end, language) in enumerate(ALTERNATING):
        end = ffprobe_seconds(SAMPLES / name) if end is None else end
        inputs += ["-i", str(SAMPLES / name)]
        trim = f"atrim={start}:{end},asetpts=N/SR/TB,aresample=16000,aformat=channel_layouts=mono"
        chains.append(f"[{n}:a]{trim},apad=pad_dur={GAP_S}[p{n}]")
        spans.append((at, at + end - start, language))
        at += end - start + GAP_S
    joined = "".join(f"[p{n}]" for n in range(len(ALTERNATING))) + f"concat=n={len(ALTERNATING)}:v=0:a=1"
    ffmpeg(*inputs, "-filter_complex", ";".join(chains) + ";" + joined, str(path))
    return spans
