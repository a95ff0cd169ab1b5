"""Frozen data records passed between voxflow's modules. Times are integer milliseconds."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from voxflow.fsnames import printable_name

Status = Literal["done", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class Recording:
    """One media file found by a scan."""

    uri: str  # fsspec URL or absolute local path
    rel_path: str  # path relative to the scanned root, '/'-separated
    size_bytes: int
    mtime: float = 0.0
    recording_id: str = ""  # sha256 of the content, filled by hashing
    sidecar_stem: str = ""  # the stem its sidecars take in this run (set by the plan; "" = ``stem``)

    @property
    def stem(self) -> str:
        name = self.rel_path.rsplit("/", 1)[-1]
        return name.rsplit(".", 1)[0] if "." in name else name

    @property
    def display_path(self) -> str:
        """``rel_path`` as valid UTF-8 (bytes that are not UTF-8 escaped): for logs and names."""
        return printable_name(self.rel_path)

    @property
    def rel_dir(self) -> str:
        return self.rel_path.rsplit("/", 1)[0] if "/" in self.rel_path else ""


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What ffprobe says about a file."""

    duration_ms: int
    format_name: str
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None
    has_video: bool = False
    audio_stream: int = 0  # which audio stream (0 = the first) these fields describe and decoding takes
    audio_language: str | None = None  # that stream's language tag as the file has it ("eng", "ger")
    stream_note: str = ""  # why that stream, when the one asked for is not there


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open time interval [start_ms, end_ms)."""

    start_ms: int
    end_ms: int

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass(frozen=True, slots=True)
class PreparedAudio:
    """A recording decoded to 16 kHz mono s16le WAV on local disk, with its pauses."""

    wav_path: str
    duration_ms: int
    silences: tuple[Span, ...]
    truncated: bool = False
    decode_warning: str = ""
    peak_db: float = -91.0  # loudest sample; digital silence is about -91 dB


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of a recording sent to an engine; ``data`` is encoded as ``format``."""

    index: int
    offset_ms: int
    duration_ms: int
    data: bytes
    format: str  # "pcm" = s16le mono 16 kHz, or "flac", "mp3", "wav", "ogg"
    sample_rate: int = 16_000


@dataclass(frozen=True, slots=True)
class Word:
    start_ms: int
    end_ms: int
    word: str
    confidence: float | None = None
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class Segment:
    start_ms: int
    end_ms: int
    text: str
    words: tuple[Word, ...] = ()
    speaker: str | None = None
    confidence: float | None = None


@dataclass(frozen=True, slots=True)
class Transcript:
    """What an engine heard in a chunk or, stitched, in a whole recording."""

    text: str
    language: str
    segments: tuple[Segment, ...] = ()
    cost_usd: float = 0.0
    timed: bool = True  # False when the engine gave text only (no segment times)
    language_probability: float | None = None  # how sure detection is of ``language``; None: not detected
    languages: tuple[tuple[str, float], ...] = ()  # seconds of speech per language, most first

    def shifted(self, offset_ms: int) -> Transcript:
        """The same transcript with every time moved by ``offset_ms``."""
        return replace(self, segments=tuple(shift_segment(s, offset_ms) for s in self.segments))


def shift_segment(seg: Segment, offset_ms: int) -> Segment:
    return Segment(
        start_ms=seg.start_ms + offset_ms,
        end_ms=seg.end_ms + offset_ms,
        text=seg.text,
        words=tuple(
            Word(w.start_ms + offset_ms, w.end_ms + offset_ms, w.word, w.confidence, w.speaker) for w in seg.words
        ),
        speaker=seg.speaker,
        confidence=seg.confidence,
    )


@dataclass(frozen=True, slots=True)
class Cue:
    """One subtitle cue, already shaped for reading (lines joined by '\\n')."""

    start_ms: int
    end_ms: int
    text: str
    speaker: str | None = None


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """The outcome of one recording in one run (one ``transcripts`` row)."""

    recording: Recording
    status: Status
    model: str
    options_hash: str
    duration_ms: int = 0
    language: str = "und"
    text: str = ""
    segments: tuple[Segment, ...] = ()
    error_kind: str | None = None
    error_message: str | None = None
    n_chunks: int = 0
    attempts: int = 0
    cost_usd: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    outputs: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    truncated: bool = False
    quality: Quality | None = None
    language_probability: float | None = None  # see Transcript.language_probability
    languages: tuple[tuple[str, float], ...] = ()  # seconds of speech per language, most first
    worker: str = ""  # where it ran: a Dask worker's address, or host:pid
    audio_stream: int = 0  # the audio stream transcribed (0 = the first)


@dataclass(frozen=True, slots=True)
class Quality:
    """Per-recording checks on what the engine heard (the ``qa_*`` catalog columns).

    A transcript whose ``speech_s`` is far below ``detected_speech_s`` lost speech; one far
    above it, or with a high ``max_chars_per_s``, holds text nobody said."""

    segments_dropped: int  # refused by the hallucination gates (voxflow/gates.py)
    max_chars_per_s: float  # the fastest segment kept
    speech_s: float  # seconds covered by the transcript's segments
    detected_speech_s: float  # seconds of the recording that are not pauses (ffmpeg silencedetect)


# Engines name languages as codes ("en", "en-US") or English names ("english", from
# OpenAI-compatible verbose_json); voxflow stores ISO-639-1 codes.
LANGUAGE_NAMES = {
    "english": "en", "german": "de", "french": "fr", "spanish": "es", "italian": "it",
    "portuguese": "pt", "dutch": "nl", "russian": "ru", "chinese": "zh", "japanese": "ja",
    "korean": "ko", "arabic": "ar", "hindi": "hi", "turkish": "tr", "polish": "pl",
    "ukrainian": "uk", "swedish": "sv", "norwegian": "no", "danish": "da", "finnish": "fi",
    "czech": "cs", "greek": "el", "hebrew": "he", "hungarian": "hu", "romanian": "ro",
    "indonesian": "id", "vietnamese": "vi", "thai": "th", "catalan": "ca", "malay": "ms",
    "persian": "fa", "bengali": "bn", "tamil": "ta", "urdu": "ur", "welsh": "cy",
}  # fmt: skip


def language_code(value: str | None) -> str:
    """ISO-639-1 code for 'en', 'en-US' or 'english'; 'und' when unknown."""
    if not value:
        return "und"
    value = value.strip().lower()
    if value in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[value]
    head = value.replace("_", "-").split("-")[0]
    return head if len(head) == 2 and head.isalpha() else "und"
