"""Audiobook assembly: synthesised chunks → mastered, tagged MP3 files (and an M4B).

plan_files:     chunk audio + the book's structure → :class:`FilePlan` s — each file opens
                with room tone and its chapter heading read aloud, pauses go between
                sentences, paragraphs and chapters, room tone closes it; one file per chapter
                or one per book, and no file longer than ``max_file_ms`` (split at paragraph
                boundaries).
render_book:    each plan is streamed chunk by chunk into a WAV on local disk (one chunk in
                memory at a time), mastered to the ACX spec in one ffmpeg pass (resample to
                44.1 kHz, gain, look-ahead limiter, a low room-tone floor) and encoded as CBR
                MP3; the *encoded* file is measured again (MP3 raises peaks) and re-encoded
                with corrected gain/limit until it passes or the attempts run out. Then ID3
                tags (mutagen: title, artist = author, album, track, cover, CHAP/CTOC with the
                real chapter titles), the M3U playlist, the read-along WebVTT and, on request,
                one M4B with chapter atoms and the cover.

Every file is built in a work folder and moved into place only when the whole book is done:
a failure never leaves a half-written MP3 (or a half-replaced book) in the output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import textwrap
import wave
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from voxflow import media, scratch
from voxflow.errors import AudioError, ConfigError, OutputError
from voxflow.models import Cue
from voxflow.narrate.document import PreparedChapter, TextChunk
from voxflow.sources import OutputTree

FRAME_MS = 10
VOICED_DB = -50.0  # a 10 ms frame louder than this (or than peak − 40 dB) is speech
GAP_MIN_MS = 80  # a silent run this long inside a chunk can be a sentence boundary
TRIM_GUARD_IN_MS = 20
TRIM_GUARD_OUT_MS = 60
MIN_M4B_BITRATE = "32k"


# --------------------------------------------------------------------------- options


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
    formats: tuple[str, ...] = ("mp3",)  # "mp3" and/or "m4b"
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


# --------------------------------------------------------------------------- chunk audio


@dataclass(frozen=True, slots=True)
class ChunkAudio:
    """A synthesised chunk on local disk: a mono s16le WAV in the chunk cache."""

    path: str
    sample_rate: int
    frames: int

    @property
    def duration_ms(self) -> int:
        return self.frames * 1000 // self.sample_rate


@dataclass(frozen=True, slots=True)
class ChunkShape:
    """Where the speech is in a chunk: trimmed span and sentence boundaries (frames)."""

    start: int  # first frame kept (leading silence trimmed)
    end: int  # one past the last frame kept
    boundaries: tuple[int, ...]  # sentence boundaries, relative to ``start``

    @property
    def frames(self) -> int:
        return self.end - self.start


def load_samples(audio: ChunkAudio, rate: int) -> np.ndarray:
    """The chunk's samples (int16) at ``rate`` (resampled by ffmpeg when it differs)."""
    try:
        with wave.open(audio.path, "rb") as wav:
            channels, width, src_rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            pcm = wav.readframes(wav.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        raise AudioError(f"cannot read synthesised chunk {audio.path}: {exc}") from exc
    if width != 2:
        raise AudioError(f"synthesised chunk {audio.path} is not 16-bit PCM")
    if src_rate != rate or channels != 1:
        pcm = media.resample_pcm(pcm, src_rate, rate, channels)
    return np.frombuffer(pcm, dtype=np.int16)


def analyse_chunk(samples: np.ndarray, rate: int, weights: Sequence[int]) -> ChunkShape:
    """Trim leading/trailing silence and place the sentence boundaries.

    Each boundary is expected where its share of the spoken characters says; it snaps to
    the middle of the nearest silent run (≥ 80 ms) within a window around that estimate.
    """
    frame = max(1, rate * FRAME_MS // 1000)
    n = len(samples) // frame
    if n == 0:
        return ChunkShape(0, 0, ())
    x = samples[: n * frame].astype(np.float32).reshape(n, frame) / 32768.0
    db = 10 * np.log10((x * x).mean(axis=1) + 1e-12)
    threshold = max(VOICED_DB, float(db.max()) - 40.0)
    voiced = np.flatnonzero(db > threshold)
    if voiced.size == 0:
        return ChunkShape(0, 0, ())
    first, last = int(voiced[0]), int(voiced[-1])
    start = max(0, first * frame - rate * TRIM_GUARD_IN_MS // 1000)
    end = min(len(samples), (last + 1) * frame + rate * TRIM_GUARD_OUT_MS // 1000)
    gaps: list[tuple[int, int]] = []
    run = None
    min_run = max(1, GAP_MIN_MS // FRAME_MS)
    for i in range(first, last + 1):
        quiet = db[i] <= threshold - 10
        if quiet and run is None:
            run = i
        elif not quiet and run is not None:
            if i - run >= min_run:
                gaps.append((run * frame, i * frame))
            run = None
    boundaries: list[int] = []
    total = sum(weights) or 1
    span = end - start
    done = 0
    previous = 0
    window = max(rate, span // 5)
    for w in weights[:-1]:
        done += w
        expected = span * done // total
        best = None
        for g0, g1 in gaps:
            mid = (g0 + g1) // 2 - start
            if mid <= previous or abs(mid - expected) > window:
                continue
            if best is None or abs(mid - expected) < abs(best - expected):
                best = mid
        point = best if best is not None else max(previous + 1, min(expected, span - 1))
        boundaries.append(point)
        previous = point
    return ChunkShape(start, end, tuple(boundaries))


# --------------------------------------------------------------------------- file plans


@dataclass(frozen=True, slots=True)
class Clip:
    """One piece of a file's timeline: a chunk's speech, or a pause (frames)."""

    frames: int
    chunk: TextChunk | None = None
    audio: ChunkAudio | None = None
    shape: ChunkShape | None = None
    pause: str = ""  # sentence | paragraph | heading | chapter | head | tail


@dataclass(frozen=True, slots=True)
class ChapterSpan:
    index: int  # the chapter's index in the prepared document (-1 for credits)
    title: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class FilePlan:
    number: int  # track number, from 1
    name: str  # file stem, e.g. "01 - Down the Rabbit-Hole"
    title: str  # TIT2
    rate: int
    clips: tuple[Clip, ...]
    chapter_starts: tuple[tuple[int, str, int], ...]  # (chapter index, title, clip index)

    @property
    def frames(self) -> int:
        return sum(c.frames for c in self.clips)

    @property
    def duration_ms(self) -> int:
        return self.frames * 1000 // self.rate

    def clip_starts(self) -> list[int]:
        starts, at = [], 0
        for clip in self.clips:
            starts.append(at)
            at += clip.frames
        return starts

    def chapters(self) -> list[ChapterSpan]:
        """Chapter spans tiling the file (the first starts at 0, each ends at the next)."""
        starts = self.clip_starts()
        points = [(i, t, 0 if k == 0 else _ms(starts[c], self.rate)) for k, (i, t, c) in enumerate(self.chapter_starts)]
        spans = []
        for k, (index, title, start) in enumerate(points):
            end = points[k + 1][2] if k + 1 < len(points) else self.duration_ms
            spans.append(ChapterSpan(index, title, start, end))
        return spans

    def cues(self) -> list[Cue]:
        """Read-along cues: one per sentence, times from the placed chunk audio."""
        cues: list[Cue] = []
        for at, clip in zip(self.clip_starts(), self.clips, strict=True):
            if clip.chunk is None or clip.shape is None:
                continue
            edges = [0, *clip.shape.boundaries, clip.frames]
            for k, sentence in enumerate(clip.chunk.sentences):
                cues.append(Cue(_ms(at + edges[k], self.rate), _ms(at + edges[k + 1], self.rate), sentence))
        return merge_empty_cues(cues)


def merge_empty_cues(cues: Sequence[Cue]) -> list[Cue]:
    """Cues with no duration joined to a neighbour (the one before, else the next): the
    read-along never loses a sentence's text."""
    merged: list[Cue] = []
    pending: list[str] = []
    for cue in cues:
        if cue.end_ms > cue.start_ms:
            merged.append(replace(cue, text=" ".join([*pending, cue.text])) if pending else cue)
            pending = []
        elif merged:
            merged[-1] = replace(merged[-1], text=f"{merged[-1].text} {cue.text}")
        else:
            pending.append(cue.text)
    if pending and merged:
        merged[-1] = replace(merged[-1], text=" ".join([merged[-1].text, *pending]))
    return merged


def _ms(frames: int, rate: int) -> int:
    return frames * 1000 // rate


@dataclass(frozen=True)
class ChapterAudio:
    """A prepared chapter with the audio of each of its chunks (same order)."""

    chapter: PreparedChapter
    audio: tuple[ChunkAudio, ...]


def timeline_rate(book: Sequence[ChapterAudio]) -> int:
    rates = [a.sample_rate for ch in book for a in ch.audio]
    if not rates:
        raise AudioError("no synthesised audio to assemble")
    return max(set(rates), key=rates.count)


def shape_chunks(book: Sequence[ChapterAudio], rate: int) -> dict[str, ChunkShape]:
    """Trim and sentence boundaries of every chunk, keyed by chunk-audio path."""
    shapes: dict[str, ChunkShape] = {}
    for ch in book:
        for chunk, audio in zip(ch.chapter.chunks, ch.audio, strict=True):
            if audio.path not in shapes:
                shapes[audio.path] = analyse_chunk(load_samples(audio, rate), rate, chunk.weights)
    return shapes


def _frames(ms: int, rate: int) -> int:
    return ms * rate // 1000


def _chapter_clips(ch: ChapterAudio, shapes: dict[str, ChunkShape], pauses: Pauses, rate: int) -> list[Clip]:
    clips: list[Clip] = []
    previous: TextChunk | None = None
    for chunk, audio in zip(ch.chapter.chunks, ch.audio, strict=True):
        shape = shapes[audio.path]
        if shape.frames == 0:
            continue  # the engine returned silence for this chunk: nothing to place
        if previous is not None:
            if previous.kind == "heading":
                kind, ms = "heading", pauses.heading_ms
            elif previous.ends_paragraph:
                kind, ms = "paragraph", pauses.paragraph_ms
            else:
                kind, ms = "sentence", pauses.sentence_ms
            clips.append(Clip(_frames(ms, rate), pause=kind))
        clips.append(Clip(shape.frames, chunk, audio, shape))
        previous = chunk
    return clips


def _split_clips(clips: list[Clip], budget: int) -> list[list[Clip]]:
    """Cut a clip list into parts of at most ``budget`` frames, at paragraph pauses (else
    at any pause); the pause at a cut is dropped."""
    if sum(c.frames for c in clips) <= budget:
        return [clips]
    parts: list[list[Clip]] = []
    current: list[Clip] = []
    size = 0
    units = _units(clips)
    for pause, unit in units:
        unit_frames = sum(c.frames for c in unit)
        extra = (pause.frames if pause and current else 0) + unit_frames
        if current and size + extra > budget:
            parts.append(current)
            current, size = [], 0
            extra = unit_frames
        if pause and current:
            current.append(pause)
        current.extend(unit)
        size += extra
    if current:
        parts.append(current)
    return parts


def _units(clips: list[Clip]) -> list[tuple[Clip | None, list[Clip]]]:
    """(pause before, clips) groups that may not be separated: a paragraph, or a heading."""
    units: list[tuple[Clip | None, list[Clip]]] = []
    pause: Clip | None = None
    current: list[Clip] = []
    for clip in clips:
        if clip.chunk is None:
            if clip.pause in ("paragraph", "chapter") and current:
                units.append((pause, current))
                pause, current = clip, []
            else:
                current.append(clip)
        else:
            current.append(clip)
    if current:
        units.append((pause, current))
    return units


def safe_name(text: str, limit: int = 80) -> str:
    """A file name fragment: no path separators or characters Windows/ID3 players reject."""
    text = re.sub(r'[\\/:*?"<>|\x00-\x1f]+', " ", text)
    text = " ".join(text.split()).strip(" .")
    return text[:limit].rstrip(" .") or "untitled"


def plan_files(
    book: Sequence[ChapterAudio],
    meta: BookMeta,
    options: AssemblyOptions,
    *,
    shapes: dict[str, ChunkShape] | None = None,
    credits: tuple[ChapterAudio, ChapterAudio] | None = None,
) -> list[FilePlan]:
    """Lay out the book's files (see the module docstring)."""
    rate = timeline_rate(book)
    shapes = shapes if shapes is not None else shape_chunks(book, rate)
    pauses = options.pauses
    head = Clip(_frames(pauses.head_ms, rate), pause="head")
    tail = Clip(_frames(pauses.tail_ms, rate), pause="tail")
    budget = _frames(options.max_file_ms, rate) - head.frames - tail.frames
    sections = [(ch.chapter.index, ch.chapter.title, _chapter_clips(ch, shapes, pauses, rate)) for ch in book]
    sections = [s for s in sections if s[2]]
    if not sections:
        raise AudioError("the engine returned only silence: nothing to assemble")
    credit_sections = []
    if credits:
        for ch, label in zip(credits, ("Opening Credits", "Closing Credits"), strict=True):
            credit_sections.append((-1, label, _chapter_clips(ch, shapes, pauses, rate)))
    plans: list[FilePlan] = []
    if options.per_chapter:
        ordered = list(sections)
        if credit_sections:
            ordered = [credit_sections[0], *ordered, credit_sections[1]]
        width = max(2, len(str(len(ordered))))
        start_number = 0 if credit_sections else 1
        for k, (index, title, clips) in enumerate(ordered):
            number = start_number + k
            parts = _split_clips(clips, budget)
            for p, part in enumerate(parts, start=1):
                suffix = f" (part {p})" if len(parts) > 1 else ""
                name = f"{number:0{width}d} - {safe_name(title)}{suffix}"
                plans.append(
                    FilePlan(
                        len(plans) + 1,
                        name,
                        title + suffix,
                        rate,
                        (head, *part, tail),
                        ((index, title, 1),),
                    )
                )
        return plans
    # one file per book: chapters joined by chapter pauses, split where a file would be long
    gap = Clip(_frames(pauses.chapter_ms, rate), pause="chapter")
    groups: list[list[tuple[int, str, list[Clip]]]] = [[]]
    size = 0
    for index, title, clips in sections:
        frames = sum(c.frames for c in clips)
        if frames > budget:
            for p, part in enumerate(_split_clips(clips, budget), start=1):
                label = title if p == 1 else f"{title} (continued)"
                if groups[-1]:
                    groups.append([])
                groups[-1].append((index, label, part))
                groups.append([])
            size = 0
            continue
        extra = frames + (gap.frames if groups[-1] else 0)
        if groups[-1] and size + extra > budget:
            groups.append([])
            size, extra = 0, frames
        groups[-1].append((index, title, clips))
        size += extra
    groups = [g for g in groups if g]
    if credit_sections:
        opening, closing = credit_sections
        groups[0] = [(-1, opening[1], opening[2]), *groups[0]]
        groups[-1] = [*groups[-1], (-1, closing[1], closing[2])]
    for g, group in enumerate(groups, start=1):
        clips = [head]
        starts = []
        for k, (index, title, part) in enumerate(group):
            if k:
                clips.append(gap)
            if index >= 0:
                starts.append((index, title, len(clips)))
            clips.extend(part)
        clips.append(tail)
        suffix = f" - Part {g}" if len(groups) > 1 else ""
        title = meta.title + (f" (part {g} of {len(groups)})" if len(groups) > 1 else "")
        if not starts:
            starts = [(group[0][0], group[0][1], 1)]
        plans.append(FilePlan(g, safe_name(meta.book_name) + suffix, title, rate, tuple(clips), tuple(starts)))
    return plans


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True)
class TimelineStats:
    frames: int
    rms_db: float
    peak_db: float


def render_timeline(plan: FilePlan, wav_path: str) -> TimelineStats:
    """Write the plan's audio to a mono 16-bit WAV, one chunk in memory at a time."""
    sumsq = 0.0
    peak = 0
    block = np.zeros(plan.rate, dtype=np.int16).tobytes()
    with wave.open(wav_path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(plan.rate)
        for clip in plan.clips:
            if clip.audio is None or clip.shape is None:
                left = clip.frames
                while left > 0:
                    n = min(left, plan.rate)
                    out.writeframes(block[: 2 * n])
                    left -= n
                continue
            samples = load_samples(clip.audio, plan.rate)[clip.shape.start : clip.shape.end]
            wide = samples.astype(np.float64)
            sumsq += float(np.dot(wide, wide))
            peak = max(peak, int(np.abs(samples.astype(np.int32)).max(initial=0)))
            out.writeframes(samples.tobytes())
    frames = plan.frames
    rms = (sumsq / max(frames, 1)) ** 0.5 / 32768.0
    return TimelineStats(
        frames=frames,
        rms_db=20 * np.log10(rms) if rms > 0 else -200.0,
        peak_db=20 * np.log10(peak / 32768.0) if peak else -200.0,
    )


@dataclass(frozen=True, slots=True)
class RuleCheck:
    rule: str
    passed: bool
    measured: str
    target: str


@dataclass(frozen=True)
class MasteringReport:
    """Pass/fail per ACX rule, measured on the encoded file."""

    file: str
    passed: bool
    rules: tuple[RuleCheck, ...]
    levels: media.Levels
    gain_db: float
    limit_db: float
    attempts: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "passed": self.passed,
            "rules": [asdict(r) for r in self.rules],
            "levels": asdict(self.levels),
            "gain_db": round(self.gain_db, 2),
            "limit_db": round(self.limit_db, 2),
            "attempts": self.attempts,
            "note": "checked against the ACX audio spec; ACX does not accept synthetic narration without permission",
        }


def master_mp3(
    wav_path: str,
    mp3_path: str,
    stats: TimelineStats,
    options: AssemblyOptions,
    *,
    name: str,
) -> MasteringReport:
    """Encode ``wav_path`` as CBR MP3 mastered to the targets; measure the MP3 itself and
    re-encode with corrected gain/limit while it misses (up to ``max_attempts``)."""
    t = options.targets
    gain = t.target_rms_db - stats.rms_db if stats.rms_db > -150 else 0.0
    limit = t.limit_db
    levels = None
    attempts = 0
    for attempts in range(1, t.max_attempts + 1):  # noqa: B007 (reported below)
        media.encode_mastered(
            wav_path,
            mp3_path,
            gain_db=gain,
            limit_db=limit,
            noise_db=t.room_tone_db,
            fmt="mp3",
            bitrate=options.bitrate,
        )
        levels = media.measure_levels(mp3_path)
        rms_ok = t.rms_min_db + t.margin_db <= levels.rms_db <= t.rms_max_db - t.margin_db
        peak_ok = levels.peak_db <= t.peak_max_db - 0.1
        if rms_ok and peak_ok:
            break
        if not rms_ok:
            gain += t.target_rms_db - levels.rms_db
        if not peak_ok:
            limit -= levels.peak_db - (t.peak_max_db - t.margin_db)
        limit = max(limit, -24.0)
    assert levels is not None
    rules = _rules(mp3_path, levels, options)
    return MasteringReport(name, all(r.passed for r in rules), tuple(rules), levels, gain, limit, attempts)


def _rules(mp3_path: str, levels: media.Levels, options: AssemblyOptions) -> list[RuleCheck]:
    from mutagen.mp3 import MP3, BitrateMode

    t, p = options.targets, options.pauses
    info = MP3(mp3_path).info
    kbps = int(options.bitrate.rstrip("k"))
    cbr = info.bitrate_mode in (BitrateMode.CBR, BitrateMode.UNKNOWN)
    minutes = info.length / 60
    return [
        RuleCheck(
            "rms",
            t.rms_min_db <= levels.rms_db <= t.rms_max_db,
            f"{levels.rms_db:.1f} dB",
            f"{t.rms_min_db:g} … {t.rms_max_db:g} dB",
        ),
        RuleCheck(
            "peak",
            levels.peak_db <= t.peak_max_db,
            f"{levels.peak_db:.1f} dB",
            f"≤ {t.peak_max_db:g} dB",
        ),
        RuleCheck(
            "noise_floor",
            levels.floor_db <= t.floor_max_db,
            f"{levels.floor_db:.1f} dB",
            f"≤ {t.floor_max_db:g} dB",
        ),
        RuleCheck("room_tone_head", 500 <= p.head_ms <= 1000, f"{p.head_ms} ms", "500–1000 ms"),
        RuleCheck("room_tone_tail", 1000 <= p.tail_ms <= 5000, f"{p.tail_ms} ms", "1000–5000 ms"),
        RuleCheck(
            "format",
            cbr
            and info.sample_rate == media.ACX_SAMPLE_RATE
            and info.channels == 1
            and abs(info.bitrate - kbps * 1000) <= 1000,
            f"{'CBR' if cbr else 'VBR'} {info.bitrate // 1000} kbps {info.sample_rate} Hz {info.channels} ch",
            f"CBR {kbps} kbps 44100 Hz mono",
        ),
        RuleCheck(
            "length",
            minutes <= options.max_file_ms / 60_000 + 0.01,
            f"{minutes:.1f} min",
            f"≤ {options.max_file_ms / 60_000:g} min",
        ),
    ]


def tag_mp3(path: str, plan: FilePlan, meta: BookMeta, *, total: int, chapters: Sequence[ChapterSpan]) -> None:
    """ID3v2.3: title, artist = author, album, track n/N, genre, cover, CHAP/CTOC frames."""
    from mutagen.id3 import (
        APIC,
        CHAP,
        COMM,
        CTOC,
        ID3,
        TALB,
        TCON,
        TIT2,
        TLAN,
        TPE1,
        TPE2,
        TRCK,
        TXXX,
        CTOCFlags,
    )

    tags = ID3()
    author = meta.author or "Unknown"
    tags.add(TIT2(encoding=3, text=[plan.title]))
    tags.add(TPE1(encoding=3, text=[author]))
    tags.add(TPE2(encoding=3, text=[author]))
    tags.add(TALB(encoding=3, text=[meta.title]))
    tags.add(TRCK(encoding=3, text=[f"{plan.number}/{total}"]))
    tags.add(TCON(encoding=3, text=["Audiobook"]))
    tags.add(TXXX(encoding=3, desc="NARRATOR", text=[meta.narrator]))
    if meta.language:
        tags.add(TLAN(encoding=3, text=[meta.language]))
    if meta.comment:
        tags.add(COMM(encoding=3, lang="eng", desc="", text=[meta.comment]))
    if meta.cover:
        tags.add(
            APIC(
                encoding=3,
                mime=meta.cover_mime or "image/jpeg",
                type=3,
                desc="Cover",
                data=meta.cover,
            )
        )
    ids = [f"chp{k}" for k in range(len(chapters))]
    tags.add(
        CTOC(
            element_id="toc",
            flags=CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED,
            child_element_ids=ids,
            sub_frames=[TIT2(encoding=3, text=["Chapters"])],
        )
    )
    for cid, span in zip(ids, chapters, strict=True):
        tags.add(
            CHAP(
                element_id=cid,
                start_time=span.start_ms,
                end_time=span.end_ms,
                start_offset=0xFFFFFFFF,
                end_offset=0xFFFFFFFF,
                sub_frames=[TIT2(encoding=3, text=[span.title])],
            )
        )
    try:
        tags.save(path, v2_version=3)
    except Exception as exc:  # mutagen raises its own error types
        raise OutputError(f"cannot write ID3 tags to {path}: {exc}") from exc


def mp3_duration_ms(path: str) -> int:
    from mutagen.mp3 import MP3

    return round(MP3(path).info.length * 1000)


def render_vtt(cues: Sequence[Cue], duration_ms: int) -> str:
    """Read-along WebVTT (the same writer as the subtitle sidecars), lines wrapped at 70."""
    from voxflow.subtitles import SidecarDoc, VTTWriter

    clamped = []
    for cue in cues:
        start = max(0, min(cue.start_ms, duration_ms))
        clamped.append(Cue(start, max(start, min(cue.end_ms, duration_ms)), cue.text))
    shaped = [replace(c, text="\n".join(textwrap.wrap(c.text, 70)) or c.text) for c in merge_empty_cues(clamped)]
    doc = SidecarDoc(
        text=" ".join(c.text for c in cues),
        language="und",
        model="",
        duration_ms=duration_ms,
        cues=tuple(shaped),
    )
    return VTTWriter().render(doc)


def render_m3u(meta: BookMeta, files: Sequence[tuple[str, str, int]]) -> str:
    """Extended M3U: (file name, title, duration ms) per entry, paths relative."""
    lines = ["#EXTM3U", f"#PLAYLIST:{meta.title}"]
    for name, title, ms in files:
        who = f"{meta.author} - " if meta.author else ""
        lines += [f"#EXTINF:{round(ms / 1000)},{who}{title}", name]
    return "\n".join(lines) + "\n"


def ffmetadata(meta: BookMeta, chapters: Sequence[ChapterSpan]) -> str:
    """An ffmetadata file: book tags and one [CHAPTER] per chapter (for the M4B)."""

    def esc(value: str) -> str:
        return re.sub(r"([=;#\\\n])", r"\\\1", value)

    lines = [
        ";FFMETADATA1",
        f"title={esc(meta.title)}",
        f"album={esc(meta.title)}",
        f"artist={esc(meta.author or 'Unknown')}",
        "genre=Audiobook",
        f"comment={esc(meta.comment or meta.narrator)}",
    ]
    for span in chapters:
        lines += [
            "",
            "[CHAPTER]",
            "TIMEBASE=1/1000",
            f"START={span.start_ms}",
            f"END={span.end_ms}",
            f"title={esc(span.title)}",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the book


@dataclass(frozen=True)
class RenderedFile:
    rel: str  # path under the output tree
    uri: str
    title: str
    duration_ms: int
    chapters: tuple[ChapterSpan, ...]
    mastering: MasteringReport | None
    fmt: str = "mp3"


@dataclass(frozen=True)
class Audiobook:
    """What :func:`render_book` wrote."""

    folder: str  # rel folder of the book
    files: tuple[RenderedFile, ...]  # MP3 files in playing order
    extras: tuple[RenderedFile, ...] = ()  # playlist, read-along, M4B, report …
    plans: tuple[FilePlan, ...] = ()

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(f.uri for f in (*self.files, *self.extras))

    @property
    def mastering_passed(self) -> bool:
        return all(f.mastering is None or f.mastering.passed for f in self.files)


@contextlib.contextmanager
def work_folder(out: OutputTree, key: str) -> Iterator[Path]:
    """A scratch folder on the output's file system (so finished files are renamed, not
    copied, into place); removed afterwards."""
    if out.local:
        base = out.state_dir() / "work"
        base.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{key[:12]}-", dir=base))
    else:
        path = Path(tempfile.mkdtemp(prefix="voxflow-book-", dir=os.environ.get("VOXFLOW_TMP_DIR")))
    scratch.claim(path)  # a later run removes it if this process dies before the end
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def render_book(
    book: Sequence[ChapterAudio],
    meta: BookMeta,
    options: AssemblyOptions,
    out: OutputTree,
    folder: str,
    *,
    credits: tuple[ChapterAudio, ChapterAudio] | None = None,
    extra_files: dict[str, bytes] | None = None,
    work_key: str = "book",
) -> Audiobook:
    """Assemble, master, tag and write the whole book under ``folder`` (see module doc)."""
    options.validate()
    rate = timeline_rate(book)
    shapes = shape_chunks([*book, *(credits or ())], rate)
    plans = plan_files(book, meta, options, shapes=shapes, credits=credits)
    staged: list[tuple[str, Path]] = []  # (rel, local file) moved into place at the end
    files: list[RenderedFile] = []
    extras: list[RenderedFile] = []
    with work_folder(out, work_key) as work:
        wavs: list[tuple[FilePlan, Path, TimelineStats]] = []
        for plan in plans:
            wav = work / f"{plan.number:04d}.wav"
            stats = render_timeline(plan, str(wav))
            wavs.append((plan, wav, stats))
            if "mp3" in options.formats:
                mp3 = work / f"{plan.number:04d}.mp3"
                report = master_mp3(str(wav), str(mp3), stats, options, name=plan.name + ".mp3")
                spans = plan.chapters()
                tag_mp3(str(mp3), plan, meta, total=len(plans), chapters=spans)
                rel = f"{folder}/{plan.name}.mp3"
                staged.append((rel, mp3))
                files.append(
                    RenderedFile(
                        rel,
                        out.uri(rel),
                        plan.title,
                        mp3_duration_ms(str(mp3)),
                        tuple(spans),
                        report,
                    )
                )
            if "m4b" not in options.formats:
                wav.unlink(missing_ok=True)
        book_name = safe_name(meta.book_name)
        durations = [f.duration_ms for f in files] or [p.duration_ms for p in plans]
        cues: list[Cue] = []
        offset = 0
        for plan, duration in zip(plans, durations, strict=True):
            cues += [replace(c, start_ms=c.start_ms + offset, end_ms=c.end_ms + offset) for c in plan.cues()]
            if plan.name != book_name and files:  # each chapter/part MP3 gets its own VTT too
                vtt_rel = f"{folder}/{plan.name}.vtt"
                staged.append((vtt_rel, _write(work, vtt_rel, render_vtt(plan.cues(), duration))))
                extras.append(RenderedFile(vtt_rel, out.uri(vtt_rel), plan.title, duration, (), None, "vtt"))
            offset += duration
        vtt_rel = f"{folder}/{book_name}.vtt"
        book_vtt = render_vtt(cues, offset)
        check_read_along(book_vtt, [*(credits or ())[:1], *book, *(credits or ())[1:]])
        staged.append((vtt_rel, _write(work, vtt_rel, book_vtt)))
        extras.append(RenderedFile(vtt_rel, out.uri(vtt_rel), meta.title, offset, (), None, "vtt"))
        if files:
            m3u_rel = f"{folder}/{book_name}.m3u"
            entries = [(Path(f.rel).name, f.title, f.duration_ms) for f in files]
            staged.append((m3u_rel, _write(work, m3u_rel, render_m3u(meta, entries))))
            extras.append(RenderedFile(m3u_rel, out.uri(m3u_rel), meta.title, offset, (), None, "m3u"))
        if "m4b" in options.formats:
            m4b_rel = f"{folder}/{book_name}.m4b"
            m4b, spans = _render_m4b(wavs, meta, options, work)
            staged.append((m4b_rel, m4b))
            extras.append(
                RenderedFile(
                    m4b_rel,
                    out.uri(m4b_rel),
                    meta.title,
                    spans[-1].end_ms if spans else 0,
                    tuple(spans),
                    None,
                    "m4b",
                )
            )
        for name, data in (extra_files or {}).items():
            rel = f"{folder}/{name}"
            path = work / f"extra-{len(staged)}"
            path.write_bytes(data)
            staged.append((rel, path))
            extras.append(RenderedFile(rel, out.uri(rel), name, 0, (), None, "extra"))
        for rel, path in staged:  # the whole book is ready: move it into place
            try:
                out.put_file(rel, str(path))
            except OSError as exc:
                raise OutputError(f"cannot write {out.uri(rel)}: {exc}") from exc
    return Audiobook(folder, tuple(files), tuple(extras), tuple(plans))


def check_read_along(vtt: str, chapters: Sequence[ChapterAudio]) -> None:
    """Invariant: the read-along VTT, parsed back (webvtt-py), holds the text of every chunk
    in order (compared with all whitespace removed). AudioError otherwise."""
    import html

    import webvtt

    shown = "".join("".join(html.unescape(c.text).split()) for c in webvtt.from_string(vtt))
    expected = "".join("".join(chunk.text.split()) for ch in chapters for chunk in ch.chapter.chunks)
    if shown != expected:
        pairs = enumerate(zip(shown, expected, strict=False))
        at = next((i for i, (a, b) in pairs if a != b), min(len(shown), len(expected)))
        raise AudioError(
            f"the read-along VTT does not cover every chunk: it differs from the text at "
            f"character {at} ({expected[at : at + 40]!r})"
        )


def _write(work: Path, rel: str, text: str) -> Path:
    path = work / (hashlib.sha256(rel.encode()).hexdigest()[:16] + Path(rel).suffix)
    path.write_text(text, encoding="utf-8")
    return path


def _render_m4b(
    wavs: Sequence[tuple[FilePlan, Path, TimelineStats]],
    meta: BookMeta,
    options: AssemblyOptions,
    work: Path,
) -> tuple[Path, list[ChapterSpan]]:
    """One M4B of the whole book: the file timelines back to back, mastered the same way."""
    rate = wavs[0][0].rate
    book_wav = work / "book.wav"
    spans: list[ChapterSpan] = []
    offset_frames = 0
    sumsq = 0.0
    peak = -200.0
    with wave.open(str(book_wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        for plan, wav, stats in wavs:
            with wave.open(str(wav), "rb") as src:
                while data := src.readframes(rate * 10):
                    out.writeframes(data)
            offset_ms = _ms(offset_frames, rate)
            spans += [replace(s, start_ms=s.start_ms + offset_ms, end_ms=s.end_ms + offset_ms) for s in plan.chapters()]
            sumsq += (10 ** (stats.rms_db / 20)) ** 2 * stats.frames
            peak = max(peak, stats.peak_db)
            offset_frames += stats.frames
            wav.unlink(missing_ok=True)
    rms_db = 10 * np.log10(sumsq / max(offset_frames, 1)) if sumsq > 0 else -200.0
    t = options.targets
    gain = t.target_rms_db - rms_db if rms_db > -150 else 0.0
    meta_path = work / "chapters.ffmeta"
    meta_path.write_text(ffmetadata(meta, spans), encoding="utf-8")
    cover_path = None
    if meta.cover:
        ext = ".png" if (meta.cover_mime or "").endswith("png") else ".jpg"
        cover_path = work / f"cover{ext}"
        cover_path.write_bytes(meta.cover)
    m4b = work / "book.m4b"
    media.encode_mastered(
        str(book_wav),
        str(m4b),
        gain_db=gain,
        limit_db=t.limit_db,
        noise_db=t.room_tone_db,
        fmt="m4b",
        bitrate=options.m4b_bitrate,
        metadata_path=str(meta_path),
        cover_path=str(cover_path) if cover_path else None,
    )
    book_wav.unlink(missing_ok=True)
    return m4b, spans


__all__ = [
    "AssemblyOptions",
    "Audiobook",
    "BookMeta",
    "ChapterAudio",
    "ChapterSpan",
    "ChunkAudio",
    "ChunkShape",
    "Clip",
    "FilePlan",
    "MasteringReport",
    "MasteringTargets",
    "Pauses",
    "RenderedFile",
    "RuleCheck",
    "analyse_chunk",
    "load_samples",
    "master_mp3",
    "plan_files",
    "render_book",
    "render_m3u",
    "render_timeline",
    "render_vtt",
    "safe_name",
    "tag_mp3",
]
