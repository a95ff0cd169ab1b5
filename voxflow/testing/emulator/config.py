"""What the emulator offers and how it behaves: its models, prices, keys, faults and limits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from voxflow.testing.emulator.faults import parse_faults

DEFAULT_KEY = "sk-or-v1-emulator-test-key-0000000000000000"
API_PREFIX = "/api/v1"
AUDIO_TOKENS_PER_SECOND = 10.0  # how audio is billed (voxflow's estimates assume the same)
INPUT_FORMATS = frozenset({"wav", "mp3", "flac", "m4a", "ogg", "webm", "aac", "pcm"})
PCM_RATE = 16_000

Timestamps = Literal["verbose", "text_only", "json_only"]
"""``verbose``: honours verbose_json; ``text_only``: accepts it, answers text only;
``json_only``: 400 on verbose_json."""


@dataclass(frozen=True)
class SttModel:
    """A speech-to-text model the emulator offers."""

    id: str
    name: str
    timestamps: Timestamps = "verbose"
    diarize: bool = False
    keyterms: bool = False
    billing: Literal["seconds", "tokens"] = "seconds"  # what usage reports beside cost
    audio_price: float = 0.00001  # USD per audio token (10 a second → $0.006 a minute)
    completion_price: float = 0.0  # USD per output text token
    request_price: float = 0.0


@dataclass(frozen=True)
class TtsModel:
    """A text-to-speech model the emulator offers."""

    id: str
    name: str
    voices: tuple[str, ...]
    max_chars: int = 4096
    speed: bool = True  # False: 400 on a non-default speed
    instructions: bool = True
    prompt_price: float = 0.0000006  # USD per input text token
    audio_output_price: float = 0.000012  # USD per output audio token
    request_price: float = 0.0


_OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)
DEFAULT_STT_MODELS: tuple[SttModel, ...] = (
    SttModel("openai/whisper-large-v3", "OpenAI: Whisper Large v3"),
    SttModel("openai/whisper-1", "OpenAI: Whisper 1"),
    SttModel("nvidia/parakeet-tdt-0.6b-v3", "NVIDIA: Parakeet TDT 0.6B v3", audio_price=0.000005),
    SttModel(
        "google/chirp-3",
        "Google: Chirp 3",
        timestamps="text_only",
        keyterms=True,
        audio_price=0.0000267,
    ),
    SttModel(
        "openai/gpt-4o-transcribe",
        "OpenAI: GPT-4o Transcribe",
        timestamps="json_only",
        billing="tokens",
        audio_price=0.0000025,
        completion_price=0.00001,
    ),
    SttModel(
        "openai/gpt-4o-mini-transcribe",
        "OpenAI: GPT-4o Mini Transcribe",
        timestamps="json_only",
        billing="tokens",
        audio_price=0.00000125,
        completion_price=0.000005,
    ),
    SttModel(
        "elevenlabs/scribe-v1",
        "ElevenLabs: Scribe v1",
        diarize=True,
        keyterms=True,
        audio_price=0.0000067,
    ),
)
DEFAULT_TTS_MODELS: tuple[TtsModel, ...] = (
    TtsModel("openai/gpt-4o-mini-tts-2025-12-15", "OpenAI: GPT-4o mini TTS", _OPENAI_VOICES),
    TtsModel(
        "openai/tts-1",
        "OpenAI: TTS 1",
        _OPENAI_VOICES[:9],
        instructions=False,
        prompt_price=0.0,
        audio_output_price=0.0,
        request_price=0.0,
    ),
    TtsModel(
        "google/gemini-2.5-flash-preview-tts",
        "Google: Gemini 2.5 Flash Preview TTS",
        ("Kore", "Puck", "Zephyr", "Charon", "Fenrir", "Leda"),
        max_chars=4000,
        speed=False,
        prompt_price=0.0000005,
        audio_output_price=0.00001,
    ),
    TtsModel(
        "mistralai/voxtral-mini-tts",
        "Mistral: Voxtral Mini TTS",
        ("default", "narrator"),
        max_chars=4000,
        speed=False,
        instructions=False,
        prompt_price=0.0000004,
        audio_output_price=0.000008,
    ),
)


@dataclass(frozen=True)
class ChatModel:
    """A chat-completions (text → text) model the emulator offers."""

    id: str
    name: str
    context_length: int = 128_000  # tokens (prompt + completion); a longer prompt → 400
    prompt_price: float = 0.00000015  # USD per input token
    completion_price: float = 0.0000006  # USD per output token


DEFAULT_CHAT_MODELS: tuple[ChatModel, ...] = (
    ChatModel("openai/gpt-4o-mini", "OpenAI: GPT-4o-mini"),
    ChatModel("openai/gpt-4o", "OpenAI: GPT-4o", prompt_price=0.0000025, completion_price=0.00001),
    ChatModel(
        "meta-llama/llama-3.1-8b-instruct",
        "Meta: Llama 3.1 8B Instruct",
        context_length=2048,  # small on purpose: long inputs must be sent in batches
        prompt_price=0.00000002,
        completion_price=0.00000005,
    ),
)


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator behaves; every field has a default that behaves like OpenRouter."""

    keys: tuple[str, ...] = (DEFAULT_KEY,)
    faults: str | None = None  # "429:0.1,500:0.05,slow:0.05,drop:0.02,malformed:0.02"
    retry_after: float = 1.0  # seconds, sent with fault 429s
    seed: int | None = 0  # for the fault draws; None = random
    latency_ms: int = 0  # added to every audio request (asyncio sleep)
    slow_ms: int = 3000  # added by a "slow" fault
    max_body_bytes: int = 25 * 1024 * 1024  # larger bodies → 413
    fast_text: bool = False  # skip recognition; text from the audio hash
    credit_usd: float | None = None  # 402 once this much is spent
    stt_models: tuple[SttModel, ...] = DEFAULT_STT_MODELS
    tts_models: tuple[TtsModel, ...] = DEFAULT_TTS_MODELS
    chat_models: tuple[ChatModel, ...] = DEFAULT_CHAT_MODELS
    chat_faults: str | None = None  # fault spec for chat requests only (default: ``faults``)
    chat_fault_limit: int | None = None  # at most this many chat faults in all (None: no limit)
    lose_line_for: tuple[str, ...] = ()  # target languages whose translation answers lose their last line …
    lose_line_limit: int | None = None  # … this many times in all (None: every time)
    bad_cites: int | None = 0  # minutes answers citing a time their prompt does not hold (None: every one)
    prose_minutes: int | None = 0  # minutes answers in prose, not JSON (None: every one)
    stt_engine: str = "local/tiny.en"
    tts_engine: str = "local/en_US-joe-medium"
    local_threads: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    workers: int = 32  # threads for ffmpeg and the engines

    def __post_init__(self) -> None:
        parse_faults(self.faults)  # fail early on a bad spec
        parse_faults(self.chat_faults)
