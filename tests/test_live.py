"""Opt-in: one tiny real OpenRouter call each way (`pytest -m live`, needs OPENROUTER_API_KEY).

Never part of the default run: the project's machines do not reach the internet; CI uses
the emulator. Run it by hand with a real key before a release."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from voxflow import media
from voxflow.engines.base import SynthesisOptions, TranscribeOptions
from voxflow.models import AudioChunk, Span
from voxflow.settings import load_settings

LIVE_KEY = os.environ.get("VOXFLOW_LIVE_OPENROUTER_API_KEY")  # conftest removes OPENROUTER_API_KEY
pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not LIVE_KEY, reason="live test: set VOXFLOW_LIVE_OPENROUTER_API_KEY to a real key"),
]


@pytest.fixture()
def live_settings(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", LIVE_KEY or "")
    monkeypatch.delenv("OPENROUTER_BASE_URL", raising=False)
    return load_settings()


def test_one_real_transcription(live_settings, samples: Path, tmp_path: Path) -> None:
    from voxflow.engines.openrouter import OpenRouterTranscriber

    prepared = media.prepare_audio(str(samples / "spk1_snt3.wav"), str(tmp_path / "a.wav"))
    flac = media.encode_pcm(media.read_pcm(prepared.wav_path, Span(0, prepared.duration_ms)), "flac")
    engine = OpenRouterTranscriber("openai/whisper-large-v3", live_settings)
    result = asyncio.run(
        engine.transcribe(
            AudioChunk(0, 0, prepared.duration_ms, flac, "flac"),
            TranscribeOptions("openai/whisper-large-v3", language="en"),
        )
    )
    assert "air is pure" in result.text.lower()


def test_one_real_synthesis(live_settings) -> None:
    from voxflow.engines.openrouter import OpenRouterSynthesizer
    from voxflow.settings import OPENROUTER_TTS_DEFAULT

    engine = OpenRouterSynthesizer(OPENROUTER_TTS_DEFAULT, live_settings, voice="alloy")
    audio = asyncio.run(
        engine.synthesise("Hello from voxflow.", SynthesisOptions(OPENROUTER_TTS_DEFAULT, voice="alloy"))
    )
    assert audio.duration_ms > 500
