"""A stop request (Ctrl-C, SIGTERM) ends an OpenRouter request's retries: nothing more is sent,
neither after a failed attempt nor after the backoff sleep it was in. Real HTTP to the emulator
on 127.0.0.1; the oracle is the emulator's own request log."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from voxflow import interrupts, media
from voxflow.engines.base import TranscribeOptions
from voxflow.engines.openrouter import OpenRouterTranscriber
from voxflow.models import AudioChunk
from voxflow.settings import load_settings

KEY = "sk-or-v1-stop-test"
MODEL = "openai/whisper-large-v3"


def one_second_of_speech() -> AudioChunk:
    pcm = bytes(32_000)  # 1 s of 16 kHz s16 silence: the emulator answers 429 before listening
    return AudioChunk(0, 0, 1000, media.encode_pcm(pcm, "flac"), "flac")


@pytest.mark.timeout(120)
def test_a_stop_request_ends_the_retries_of_a_rate_limited_request(emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every answer is a 429 with Retry-After 1 s, 6 attempts allowed: the stop, requested once
    the first request has arrived, means at most that one request reaches the emulator."""
    handle = emulator(KEY, faults="429:1.0", retry_after=1.0)
    monkeypatch.setattr(interrupts, "_stop", threading.Event())
    engine = OpenRouterTranscriber(MODEL, load_settings(max_attempts=6, retry_backoff_s=0.5))

    def stop_after_the_first_request() -> None:
        deadline = time.monotonic() + 60
        while not [e for e in handle.state.log() if e["endpoint"] == "transcriptions"]:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        interrupts.request()

    stopper = threading.Thread(target=stop_after_the_first_request)
    stopper.start()
    with pytest.raises(Exception):  # noqa: B017 - the rate limit or the stop: either ends it
        asyncio.run(engine.transcribe(one_second_of_speech(), TranscribeOptions(MODEL)))
    stopper.join()
    time.sleep(1.5)  # anything still scheduled would have reached the emulator by now
    sent = [e for e in handle.state.log() if e["endpoint"] == "transcriptions"]
    assert len(sent) == 1, sent
