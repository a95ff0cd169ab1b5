"""What the assembly is asked for: pauses, the ACX mastering targets, the output formats,
and what the tags say about the book."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Literal

from voxflow.errors import ConfigError

AudiobookFormat = Literal["mp3", "m4b"]


@dataclass(frozen=True, slots=True)
class Pauses:
    """Silence (room tone) in milliseconds; ACX wants 0.5–1 s at the head, 1–5 s at the tail."""

    sentence_ms: int = 400  # between two chunks of one paragraph
    paragraph_ms: int = 900
    heading_ms: int = 1200  # after a chapter's heading
    chapter_ms: int = 2500  # between chapters inside one file
    head_ms: int = 750
    tail_ms: int = 2500

    def validate(self) -> None:
        if not 500 <= self.head_ms <= 1000:
            raise ConfigError(f"head room tone must be 500–1000 ms (ACX), got {self.head_ms}")
        if not 1000 <= self.tail_ms <= 5000:
            raise ConfigError(f"tail room tone must be 1000–5000 ms (ACX), got {self.tail_ms}")
        for name in ("sentence_ms", "paragraph_ms", "heading_ms", "chapter_ms"):
            if not 0 <= getattr(self, name) <= 10_000:
                raise ConfigError(f"pause {name} must be 0–10000 ms")


@dataclass(frozen=True, slots=True)
class MasteringTargets:
    """The ACX audio spec, and where inside it the mastering aims."""

    rms_min_db: float = -23.0
    rms_max_db: float = -18.0
    peak_max_db: float = -3.0
    floor_max_db: float = -60.0
    target_rms_db: float = -20.5
    limit_db: float = -4.0  # limiter ceiling before encoding (MP3 raises peaks ≈ 0.5 dB)
    room_tone_db: float | None = -72.0  # RMS of the noise floor mixed in; None = digital silence
    max_attempts: int = 4
    margin_db: float = 0.3  # aim this far inside the limits


@dataclass(frozen=True, slots=True)
class AssemblyOptions:
    per_chapter: bool = True  # one MP3 per chapter (+ M3U), else one per book (CHAP frames)
    formats: tuple[AudiobookFormat, ...] = ("mp3",)
    bitrate: str = "192k"
    m4b_bitrate: str = "64k"
    max_file_ms: int = 120 * 60_000
    credits: bool = False  # opening/closing credits (title, author, narrator; "The End")
    pauses: Pauses = field(default_factory=Pauses)
    targets: MasteringTargets = field(default_factory=MasteringTargets)

    def validate(self) -> None:
        self.pauses.validate()
        bad = [f for f in self.formats if f not in ("mp3", "m4b")]
        if bad or not self.formats:
            raise ConfigError(f"unknown audiobook format(s) {bad}: use mp3 and/or m4b")
        if self.max_file_ms < 60_000:
            raise ConfigError("files must be allowed at least one minute")
        if not re.fullmatch(r"\d{2,3}k", self.bitrate):
            raise ConfigError(f"bitrate must look like 192k, got {self.bitrate!r}")

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class BookMeta:
    """What the tags say about the book."""

    title: str
    author: str | None
    narrator: str  # the voice, e.g. "a synthetic voice (local/en_US-joe-medium)"
    book_name: str  # file-name stem of the book's outputs
    cover: bytes | None = None
    cover_mime: str | None = None
    language: str | None = None
    comment: str = ""
