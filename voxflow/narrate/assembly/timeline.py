"""The timeline of each output file: chunk audio, pauses and room tone laid out in order
(:func:`plan_files`), the chapters and read-along cues it implies, and its WAV render.

Each file opens with room tone and its chapter heading read aloud, pauses go between
sentences, paragraphs and chapters, room tone closes it; one file per chapter or one per
book, and no file longer than ``max_file_ms`` (split at paragraph boundaries).
"""

from __future__ import annotations

import re
import textwrap
import wave
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from voxflow.errors import AudioError
from voxflow.models import Cue
from voxflow.narrate.assembly.chunks import ChunkAudio, ChunkShape, analyse_chunk, load_samples
from voxflow.narrate.assembly.options import AssemblyOptions, BookMeta, Pauses
from voxflow.narrate.document import PreparedChapter, TextChunk

PauseKind = Literal["sentence", "paragraph", "heading", "chapter", "head", "tail"]


@dataclass(frozen=True, slots=True)
class Clip:
    """One piece of a file's timeline: a chunk's speech, or a pause (frames)."""

    frames: int
    chunk: TextChunk | None = None
    audio: ChunkAudio | None = None
    shape: ChunkShape | None = None
    pause: PauseKind | None = None  # None: a chunk's speech


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
        points = [
            (i, t, 0 if k == 0 else ms_of(starts[c], self.rate)) for k, (i, t, c) in enumerate(self.chapter_starts)
        ]
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
                cues.append(Cue(ms_of(at + edges[k], self.rate), ms_of(at + edges[k + 1], self.rate), sentence))
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


def ms_of(frames: int, rate: int) -> int:
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


def frames_of(ms: int, rate: int) -> int:
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
            clips.append(Clip(frames_of(ms, rate), pause=kind))
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


Section = tuple[int, str, list[Clip]]  # (chapter index, -1 for credits; title; clips)


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
    head = Clip(frames_of(pauses.head_ms, rate), pause="head")
    tail = Clip(frames_of(pauses.tail_ms, rate), pause="tail")
    budget = frames_of(options.max_file_ms, rate) - head.frames - tail.frames
    sections = [(ch.chapter.index, ch.chapter.title, _chapter_clips(ch, shapes, pauses, rate)) for ch in book]
    sections = [s for s in sections if s[2]]
    if not sections:
        raise AudioError("the engine returned only silence: nothing to assemble")
    credit_sections: list[Section] = []
    if credits:
        for ch, label in zip(credits, ("Opening Credits", "Closing Credits"), strict=True):
            credit_sections.append((-1, label, _chapter_clips(ch, shapes, pauses, rate)))
    if options.per_chapter:
        if credit_sections:
            return _chapter_files([credit_sections[0], *sections, credit_sections[1]], 0, rate, head, tail, budget)
        return _chapter_files(sections, 1, rate, head, tail, budget)
    gap = Clip(frames_of(pauses.chapter_ms, rate), pause="chapter")
    groups = _group_sections(sections, budget, gap.frames)
    if credit_sections:
        opening, closing = credit_sections
        groups[0] = [(-1, opening[1], opening[2]), *groups[0]]
        groups[-1] = [*groups[-1], (-1, closing[1], closing[2])]
    return _book_files(groups, meta, rate, head, tail, gap)


def _chapter_files(
    ordered: list[Section], first_number: int, rate: int, head: Clip, tail: Clip, budget: int
) -> list[FilePlan]:
    """One file per chapter (numbered from ``first_number``), in parts where it is too long."""
    plans: list[FilePlan] = []
    width = max(2, len(str(len(ordered))))
    for k, (index, title, clips) in enumerate(ordered):
        number = first_number + k
        parts = _split_clips(clips, budget)
        for p, part in enumerate(parts, start=1):
            suffix = f" (part {p})" if len(parts) > 1 else ""
            name = f"{number:0{width}d} - {safe_name(title)}{suffix}"
            plans.append(
                FilePlan(len(plans) + 1, name, title + suffix, rate, (head, *part, tail), ((index, title, 1),))
            )
    return plans


def _group_sections(sections: list[Section], budget: int, gap_frames: int) -> list[list[Section]]:
    """Chapters gathered into files of at most ``budget`` frames (with a chapter pause
    between two); a chapter longer than a file is split at paragraphs into files of its own."""
    groups: list[list[Section]] = [[]]
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
        extra = frames + (gap_frames if groups[-1] else 0)
        if groups[-1] and size + extra > budget:
            groups.append([])
            size, extra = 0, frames
        groups[-1].append((index, title, clips))
        size += extra
    return [g for g in groups if g]


def _book_files(
    groups: list[list[Section]], meta: BookMeta, rate: int, head: Clip, tail: Clip, gap: Clip
) -> list[FilePlan]:
    """One file per book (or per part of it): its chapters joined by chapter pauses."""
    plans: list[FilePlan] = []
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
