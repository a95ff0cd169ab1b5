"""The two engine protocols and model routing.

``local/…`` model ids go to the embedded offline engines (:mod:`voxflow.engines.local`);
anything else goes to OpenRouter (:mod:`voxflow.engines.openrouter`). Engines are async so
that many chunks can be in flight under one global limit; a CPU-bound engine runs its work
in a thread.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from voxflow.models import AudioChunk, Transcript

if TYPE_CHECKING:
    from voxflow.settings import Settings

LOCAL_PREFIX = "local/"
# Raise it when a change to voxflow changes what a transcript comes out as for the same
# settings (cutting, stitching, timing): every recording is then transcribed again.
PIPELINE_VERSION = 2


@dataclass(frozen=True, slots=True)
class TranscribeOptions:
    """Everything that changes what an engine hears; hashed into ``options_hash``.

    The chunking settings decide where the audio is cut, so they change the transcript too.
    Sidecar formats do not: a new format is rendered from the catalog, never re-transcribed.
    """

    model: str
    language: str | None = None
    temperature: float | None = None
    diarize: bool = False
    keyterms: tuple[str, ...] = ()
    max_chunk_s: float = 600.0
    silence_db: float = -35.0
    min_silence_s: float = 0.35

    def digest(self) -> str:
        """``options_hash``: these options plus :data:`PIPELINE_VERSION`."""
        fields = {**asdict(self), "pipeline_version": PIPELINE_VERSION}
        blob = json.dumps(fields, sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SynthesisOptions:
    model: str
    voice: str | None = None
    instructions: str | None = None
    speed: float | None = None

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    """Synthesised audio as s16le PCM plus what it cost."""

    pcm: bytes
    sample_rate: int
    channels: int = 1
    cost_usd: float = 0.0
    generation_id: str | None = None

    @property
    def duration_ms(self) -> int:
        return len(self.pcm) * 1000 // (2 * self.channels * self.sample_rate)


@runtime_checkable
class Transcriber(Protocol):
    """Speech to text for one chunk at a time."""

    model: str
    upload_format: str  # the AudioChunk.format this engine wants
    max_chunk_s: float  # longest chunk it accepts

    async def transcribe(self, chunk: AudioChunk, options: TranscribeOptions) -> Transcript:
        """What was said in ``chunk``, times relative to the chunk's start."""
        ...


@runtime_checkable
class Synthesizer(Protocol):
    """Text to speech for one chunk of text at a time."""

    model: str
    max_input_chars: int

    async def synthesise(self, text: str, options: SynthesisOptions) -> SpeechAudio:
        """Speech for ``text``."""
        ...


def is_local(model: str) -> bool:
    return model.startswith(LOCAL_PREFIX)


def get_transcriber(settings: Settings, model: str | None = None) -> Transcriber:
    """The engine for ``model`` (default: the settings' transcription model)."""
    model = model or settings.transcription_model
    if is_local(model):
        from voxflow.engines.local import LocalTranscriber

        return LocalTranscriber.shared(model, threads=settings.local_threads)
    from voxflow.engines.openrouter import OpenRouterTranscriber

    return OpenRouterTranscriber(model, settings, provider=settings.provider)


def get_synthesizer(settings: Settings, model: str | None = None) -> Synthesizer:
    """The engine for ``model`` (default: the settings' speech model)."""
    model = model or settings.speech_model
    if is_local(model):
        from voxflow.engines.local import LocalSynthesizer

        return LocalSynthesizer.shared(model)
    from voxflow.engines.openrouter import OpenRouterSynthesizer

    return OpenRouterSynthesizer(model, settings, provider=settings.provider)
