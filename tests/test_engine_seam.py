"""The engine seam: every engine answers every member a caller uses, with no-op defaults.

Callers never ask "does this engine have it?" (no ``hasattr``/``getattr`` probes): an engine
that only knows how to transcribe or speak still answers ``prepare``, ``aclose``, ``load``,
``estimate_cost``, ``max_upload_bytes``, ``waiting_chunks`` and ``use_limiter``. The OpenRouter
engines override them; the checks against them run over real HTTP on 127.0.0.1 (the emulator).
"""

from __future__ import annotations

import asyncio

import pytest

from voxflow.engines.base import SpeechAudio, SynthesisOptions, Synthesizer, TranscribeOptions, Transcriber
from voxflow.engines.local import LocalSynthesizer, LocalTranscriber
from voxflow.engines.openrouter import OpenRouterSynthesizer, OpenRouterTranscriber
from voxflow.limits import RequestLimiter
from voxflow.models import AudioChunk, Transcript
from voxflow.settings import OpenRouterSettings, Settings
from voxflow.testing.emulator import DEFAULT_KEY, start_emulator_in_thread

STT = "openai/whisper-large-v3"
TTS = "openai/gpt-4o-mini-tts-2025-12-15"
BIG_CHUNK = 10 * 2**30  # 10 GiB: more than any real chunk


class BareTranscriber(Transcriber):
    """Only what a transcriber must say: its model, format, chunk length and transcribe()."""

    model = "fake/bare"
    upload_format = "pcm"
    max_chunk_s = 30.0

    async def transcribe(self, chunk: AudioChunk, options: TranscribeOptions) -> Transcript:
        return Transcript("hello", "en")


class BareSynthesizer(Synthesizer):
    model = "fake/bare"
    max_input_chars = 100

    async def synthesise(self, text: str, options: SynthesisOptions) -> SpeechAudio:
        return SpeechAudio(b"\x00\x00" * 100, 16_000)


def settings_for(url: str) -> Settings:
    settings = Settings(max_attempts=2, request_timeout_s=60.0)
    settings.__dict__["openrouter"] = OpenRouterSettings(api_key=DEFAULT_KEY, base_url=url)
    return settings


@pytest.mark.parametrize("engine", [BareTranscriber(), LocalTranscriber("local/tiny.en")], ids=["bare", "local"])
def test_a_transcriber_without_extras_answers_the_whole_seam(engine: Transcriber) -> None:
    assert asyncio.run(engine.prepare()) is None  # nothing to check before a batch
    assert asyncio.run(engine.aclose()) is None  # no pool to close
    assert engine.estimate_cost(3_600_000) == 0.0  # an hour of audio costs nothing here
    assert engine.max_upload_bytes() >= BIG_CHUNK  # no upload limit
    assert engine.use_limiter(RequestLimiter(3)) is False  # the caller gates it, if anyone does
    assert engine.waiting_chunks in (None, 2)  # local: one inference at a time, read ahead two


def test_bare_engines_load_nothing_and_read_ahead_the_callers_default() -> None:
    assert BareTranscriber().load() is None
    assert BareSynthesizer().load() is None
    assert BareTranscriber().waiting_chunks is None


@pytest.mark.parametrize(
    "engine", [BareSynthesizer(), LocalSynthesizer("local/en_US-joe-medium")], ids=["bare", "local"]
)
def test_a_synthesizer_without_extras_answers_the_whole_seam(engine: Synthesizer) -> None:
    assert asyncio.run(engine.prepare()) is None
    assert asyncio.run(engine.aclose()) is None
    assert engine.estimate_cost(10_000) == 0.0
    assert engine.use_limiter(RequestLimiter(3)) is False


def test_openrouter_engines_gate_their_own_requests_with_the_runs_limiter() -> None:
    """use_limiter() hands the run's limiter over: each HTTP attempt then holds one slot of it."""
    with start_emulator_in_thread(fast_text=True) as emulator:
        settings = settings_for(emulator.url)
        stt, tts = OpenRouterTranscriber(STT, settings), OpenRouterSynthesizer(TTS, settings, voice="alloy")
        limiter = RequestLimiter(4)
        assert stt.use_limiter(limiter) is True and tts.use_limiter(limiter) is True

        async def work() -> None:
            pcm = b"\x01\x00" * 16_000
            chunks = [AudioChunk(i, 0, 1000, pcm, "pcm") for i in range(6)]
            await asyncio.gather(*(stt.transcribe(c, TranscribeOptions(STT)) for c in chunks))
            await tts.synthesise("Hello there.", SynthesisOptions(TTS))
            await stt.aclose()
            await tts.aclose()

        asyncio.run(work())
        audio = [e["endpoint"] for e in emulator.log() if e["endpoint"] != "models"]
        assert sorted(audio) == ["speech"] + ["transcriptions"] * 6
    assert limiter.in_flight == 0 and 1 <= limiter.peak_in_flight <= 4


def test_openrouter_prepare_checks_the_model_and_learns_its_price() -> None:
    with start_emulator_in_thread(fast_text=True) as emulator:
        engine = OpenRouterTranscriber(STT, settings_for(emulator.url))
        assert engine.estimate_cost(60_000) == 0.0  # pricing unknown before prepare()
        asyncio.run(engine.prepare())
        assert engine.estimate_cost(60_000) > 0.0
        assert engine.max_upload_bytes() < 25 * 2**20  # under the documented 25 MB body limit


def test_every_engine_is_built_on_the_seam() -> None:
    for engine in (LocalTranscriber, OpenRouterTranscriber):
        assert issubclass(engine, Transcriber)
    for engine in (LocalSynthesizer, OpenRouterSynthesizer):
        assert issubclass(engine, Synthesizer)
