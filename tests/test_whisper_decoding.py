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
