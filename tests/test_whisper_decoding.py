"""How the embedded Whisper decodes clean speech. Oracle: faster-whisper's own log of its
temperature fallback (a window decoded again, hotter, because the first pass looped or was
unsure) and the reference transcript; both come from faster-whisper, not from voxflow."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from tests.conftest import normal_words, reference_texts
from voxflow.engines.base import TranscribeOptions
from voxflow.engines.whisper import Whisper

FALLBACK = "threshold is not met with temperature"


def pcm_of(path: Path) -> bytes:
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "16000", "-"],
        check=True,
        capture_output=True,
    ).stdout


@pytest.mark.parametrize("clip", ["spk1_snt1.wav", "spk1_snt3.wav", "jfk.flac"])
def test_a_clean_clip_is_decoded_once_without_fallback(
    clip: str, samples: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """spk1_snt1's quiet tail, decoded without the text before it as a prompt, looped at
    temperature 0 (compression ratio 11) and was decoded again: 2.7 s instead of 0.6 s."""
    engine = Whisper("local/tiny.en", threads=1)
    with caplog.at_level(logging.DEBUG, logger="faster_whisper"):
        transcript = engine.transcribe(pcm_of(samples / clip), TranscribeOptions(model="local/tiny.en"))
    fallbacks = [r.getMessage() for r in caplog.records if FALLBACK in r.getMessage() and "(" in r.getMessage()]
    assert not [m for m in fallbacks if "Compression ratio" in m], fallbacks
    assert normal_words(transcript.text) == normal_words(reference_texts()[clip])


RETRY_PEAK = """
import subprocess, sys
from voxflow.engines.base import TranscribeOptions
from voxflow.engines.whisper import Whisper

def pcm(*args):
    cmd = ["ffmpeg", "-nostdin", "-v", "error", *args, "-f", "s16le", "-ac", "1", "-ar", "16000", "-"]
    return subprocess.run(cmd, check=True, capture_output=True).stdout

clean = pcm("-i", sys.argv[1])
looped = pcm("-stream_loop", "5", "-i", sys.argv[1], "-t", "28")  # the same words over and over: retried
engine = Whisper("local/base", threads=1)
engine.load()
for piece in (clean, looped):
    input()  # the test resets this process's peak, then says go
    engine.transcribe(piece, TranscribeOptions(model="local/base", language="en"))
    print("done", flush=True)
"""


def _peak_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_a_window_decoded_again_costs_little_more_memory_than_one_decoded_once(samples: Path) -> None:
    """Each hotter retry samples FALLBACK_SAMPLES candidates, each with its own copy of the
    decoder's attention over the window. Oracle: the kernel's peak RSS of the process (VmHWM,
    reset through /proc before each piece), read from outside it. At faster-whisper's default
    of 5 samples a retried 28 s piece peaked ≈ 160 MB above a clip decoded once (base)."""
    import sys

    child = subprocess.Popen(
        [sys.executable, "-c", RETRY_PEAK, str(samples / "jfk.flac")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin and child.stdout
    peaks = []
    try:
        for _ in range(2):
            Path(f"/proc/{child.pid}/clear_refs").write_text("5")  # VmHWM := current RSS
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.stdout.readline() == "done\n"
            peaks.append(_peak_mb(child.pid))
    finally:
        child.kill()
        child.wait()
    once, retried = peaks
    print(f"peaks: decoded once {once:.0f} MB, retried {retried:.0f} MB")
    assert retried - once <= 100, peaks
