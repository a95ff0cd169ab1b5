"""The engine seam (one base class per direction, every member with a default) and model routing.

``local/…`` model ids go to the embedded offline engines (:mod:`voxflow.engines.local`);
anything else goes to OpenRouter (:mod:`voxflow.engines.openrouter`). Engines are async so
that many chunks can be in flight under one global limit; a CPU-bound engine runs its work
in a thread.
"""

from __future__ import annotations

import hashlib
import json
import sys
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from voxflow.models import AudioChunk, Transcript

if TYPE_CHECKING:
    from voxflow.limits import RequestLimiter
    from voxflow.settings import Settings

LOCAL_PREFIX = "local/"
# Raise it when a change to voxflow changes what a transcript comes out as for the same
# settings (cutting, stitching, timing): every recording is then transcribed again.
PIPELINE_VERSION = 2
NO_UPLOAD_LIMIT = sys.maxsize  # what max_upload_bytes() says when the engine takes any size


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
    audio_language: str | None = None  # which audio track of a file with several (None: the default one)

    def digest(self) -> str:
        """``options_hash``: these options plus :data:`PIPELINE_VERSION` (an option at its
        default is left out, so adding one never changes the hash of existing runs)."""
        fields = {**asdict(self), "pipeline_version": PIPELINE_VERSION}
        if fields["audio_language"] is None:
            del fields["audio_language"]
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


class Engine(ABC):
    """What every engine answers, with defaults that do nothing (httpx's ``BaseTransport`` way).

    Callers use every member on every engine and never ask whether it is there; an engine
    overrides only what it needs.
    """

    model: str

    async def prepare(self) -> None:
        """Check what can fail before a batch starts (key, model, voice, pricing); default: nothing."""
        return None

    async def aclose(self) -> None:
        """Close what this event loop opened (an HTTP pool); default: nothing."""
        return None

    def load(self) -> object:
        """Load the weights now, so a bad model is a usage error before the batch; default: nothing."""
        return None

    def warm_up(self) -> None:
        """Start loading in the background, without waiting (a later :meth:`load` waits and
        raises what loading met); default: nothing."""
        return None

    def use_limiter(self, limiter: RequestLimiter) -> bool:
        """Offer the run's request limiter. True: the engine keeps it and holds one slot per
        request it sends (never during a backoff), so the caller must not hold one per call.
        False (the default): the engine keeps nothing; the caller gates its calls if it wants."""
        return False


class Transcriber(Engine):
    """Speech to text for one chunk at a time."""

    upload_format: str  # the AudioChunk.format this engine wants
    max_chunk_s: float  # longest chunk it accepts
    waiting_chunks: int | None = None  # chunks worth reading ahead; None: the caller decides

    @abstractmethod
    async def transcribe(self, chunk: AudioChunk, options: TranscribeOptions) -> Transcript:
        """What was said in ``chunk``, times relative to the chunk's start."""

    def estimate_cost(self, duration_ms: int) -> float:
        """USD this engine expects to charge for ``duration_ms`` of audio; 0.0: free or unknown."""
        return 0.0

    def max_upload_bytes(self) -> int:
        """Largest encoded chunk this engine accepts; default: no limit."""
        return NO_UPLOAD_LIMIT


class Synthesizer(Engine):
    """Text to speech for one chunk of text at a time."""

    max_input_chars: int

    @abstractmethod
    async def synthesise(self, text: str, options: SynthesisOptions) -> SpeechAudio:
        """Speech for ``text``."""

    def estimate_cost(self, chars: int) -> float:
        """USD this engine expects to charge for speaking ``chars`` characters; 0.0: free or unknown."""
        return 0.0


def is_local(model: str) -> bool:
    return model.startswith(LOCAL_PREFIX)


def get_transcriber(settings: Settings, model: str | None = None) -> Transcriber:
    """The engine for ``model`` (default: the settings' transcription model)."""
    model = model or settings.transcription_model
    if is_local(model):
        from voxflow.engines.local import LocalTranscriber
        from voxflow.engines.process import may_have_children

        # never more threads than asked for; one "process" (a thread of this one) in a Dask worker
        processes = min(settings.local_processes, settings.local_threads) if may_have_children() else 1
        return LocalTranscriber(model, threads=max(1, settings.local_threads // processes), processes=processes)
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
