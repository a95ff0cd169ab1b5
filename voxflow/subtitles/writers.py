"""Sidecar writers (SRT, VTT, TXT, JSON): each format one small class overriding ``render``;
``WRITERS`` maps names to classes, so adding a format is one class and one dict entry.
Nothing here touches files: writers return strings and the caller writes them (temp name,
then rename)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar

import srt

from voxflow.models import Cue, Segment, Word
from voxflow.subtitles.cues import PARAGRAPH_CHARS, PARAGRAPH_PAUSE_MS, SENTENCE_END, shape_cues


@dataclass(frozen=True)
class SidecarDoc:
    """Everything the sidecar writers render for one recording."""

    text: str
    language: str
    model: str
    duration_ms: int
    segments: tuple[Segment, ...] = ()
    cues: tuple[Cue, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        text: str,
        language: str,
        model: str,
        duration_ms: int,
        segments: Sequence[Segment],
        *,
        extra: Mapping[str, Any] | None = None,
        **shape_options: Any,
    ) -> SidecarDoc:
        """A doc whose cues are shaped from ``segments`` by :func:`shape_cues`."""
        cues = shape_cues(segments, duration_ms, **shape_options)
        return cls(text, language, model, duration_ms, tuple(segments), tuple(cues), dict(extra or {}))


class SubtitleWriter:
    """Renders a :class:`SidecarDoc` as one format; subclasses override ``render``."""

    extension: ClassVar[str] = ""

    def render(self, doc: SidecarDoc) -> str:
        raise NotImplementedError


class SRTWriter(SubtitleWriter):
    """SubRip, composed by the ``srt`` library; speakers as a ``NAME: `` prefix."""

    extension = "srt"

    def render(self, doc: SidecarDoc) -> str:
        subs = [
            srt.Subtitle(
                index=k,
                start=timedelta(milliseconds=cue.start_ms),
                end=timedelta(milliseconds=cue.end_ms),
                content=_with_prefix(cue),
            )
            for k, cue in enumerate(doc.cues, start=1)
        ]
        # reindex=False: srt's reindexing would silently drop zero-length cues.
        return srt.compose(subs, reindex=False)


def _with_prefix(cue: Cue) -> str:
    return f"{cue.speaker}: {cue.text}" if cue.speaker is not None else cue.text


class VTTWriter(SubtitleWriter):
    """WebVTT; speakers as ``<v NAME>`` voice spans, text escaped."""

    extension = "vtt"

    def render(self, doc: SidecarDoc) -> str:
        blocks = ["WEBVTT\n"]
        for cue in doc.cues:
            timing = f"{_vtt_time(cue.start_ms)} --> {_vtt_time(cue.end_ms)}"
            blocks.append(f"{timing}\n{_vtt_payload(cue)}\n")
        return "\n".join(blocks)


def _vtt_time(ms: int) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _vtt_payload(cue: Cue) -> str:
    lines = [_vtt_escape(line) for line in cue.text.split("\n") if line.strip()] or ["\u00a0"]
    if cue.speaker is not None:
        name = " ".join(_vtt_escape(cue.speaker).split()) or "?"
        lines[0] = f"<v {name}>{lines[0]}"
    return "\n".join(lines)


class TXTWriter(SubtitleWriter):
    """Plain text: one paragraph per line, blank lines between, newline at the end.

    Paragraphs follow the segments (new speaker, long pause, or a long paragraph
    reaching a sentence end) when the segments hold the text; otherwise the text's own
    blank lines, and long stretches are cut at sentence ends.
    """

    extension = "txt"

    def render(self, doc: SidecarDoc) -> str:
        paragraphs = [p for p in _paragraphs(doc) if p]
        return "\n\n".join(paragraphs) + "\n" if paragraphs else ""


def _normal(text: str) -> str:
    return " ".join(text.split())


def _paragraphs(doc: SidecarDoc) -> list[str]:
    seg_text = _normal(" ".join(s.text for s in doc.segments))
    if seg_text and (not doc.text.strip() or seg_text == _normal(doc.text)):
        return _segment_paragraphs(doc.segments)
    return [p for block in re.split(r"\n\s*\n", doc.text) for p in _cut_long(block)]


def _segment_paragraphs(segments: Sequence[Segment]) -> list[str]:
    groups: list[list[Segment]] = []
    for seg in segments:
        if not seg.text.strip():
            continue
        last = groups[-1][-1] if groups else None
        if last is None or seg.speaker != last.speaker or seg.start_ms - last.end_ms >= PARAGRAPH_PAUSE_MS:
            groups.append([seg])
        else:
            groups[-1].append(seg)
    out = []
    for group in groups:
        speaker = group[0].speaker
        prefix = f"{speaker}: " if speaker is not None else ""
        for k, para in enumerate(_cut_long(" ".join(s.text for s in group))):
            out.append(prefix + para if k == 0 else para)
    return out


def _cut_long(text: str) -> list[str]:
    """Whitespace-normalised ``text`` cut at sentence ends into ~PARAGRAPH_CHARS pieces."""
    paragraphs, current, size = [], [], 0
    for word in text.split():
        current.append(word)
        size += len(word) + 1
        if size >= PARAGRAPH_CHARS and SENTENCE_END.search(word):
            paragraphs.append(" ".join(current))
            current, size = [], 0
    if current:
        paragraphs.append(" ".join(current))
    return paragraphs


class JSONWriter(SubtitleWriter):
    """The whole transcript as JSON; times in seconds (3 decimals), ``extra`` merged in."""

    extension = "json"

    def render(self, doc: SidecarDoc) -> str:
        segments = [_segment_json(s) for s in doc.segments]
        data: dict[str, Any] = {
            "text": doc.text,
            "language": doc.language,
            "model": doc.model,
            "duration_s": _seconds(doc.duration_ms),
            "segments": segments,
            "words": [w for s in segments for w in s["words"]],
        }
        data.update({k: v for k, v in doc.extra.items() if k not in data})
        return json.dumps(data, ensure_ascii=False, default=str) + "\n"


def _seconds(ms: int) -> float:
    return round(ms / 1000, 3)


def _segment_json(seg: Segment) -> dict[str, Any]:
    return {
        "start": _seconds(seg.start_ms),
        "end": _seconds(seg.end_ms),
        "text": seg.text.strip(),
        "speaker": seg.speaker,
        "confidence": seg.confidence,
        "words": [_word_json(w, seg.speaker) for w in seg.words],
    }


def _word_json(w: Word, default_speaker: str | None) -> dict[str, Any]:
    return {
        "start": _seconds(w.start_ms),
        "end": _seconds(w.end_ms),
        "word": w.word.strip(),
        "confidence": w.confidence,
        "speaker": w.speaker if w.speaker is not None else default_speaker,
    }


WRITERS: dict[str, type[SubtitleWriter]] = {
    "srt": SRTWriter,
    "vtt": VTTWriter,
    "txt": TXTWriter,
    "json": JSONWriter,
}


def get_writer(fmt: str) -> SubtitleWriter:
    """The writer for ``fmt`` (``"srt"``, ``".vtt"``, ``"TXT"`` …)."""
    key = fmt.lower().lstrip(".")
    try:
        return WRITERS[key]()
    except KeyError:
        known = ", ".join(sorted(WRITERS))
        raise ValueError(f"unknown sidecar format {fmt!r}; known: {known}") from None


def render_sidecars(doc: SidecarDoc, formats: Iterable[str]) -> dict[str, str]:
    """Each requested format rendered: ``{fmt: text}``."""
    return {fmt: get_writer(fmt).render(doc) for fmt in formats}


def sidecar_name(stem: str, language: str, fmt: str) -> str:
    """``movie.en.srt``: the name media servers pick up next to ``movie.mkv``."""
    return f"{stem}.{language or 'und'}.{fmt.lower().lstrip('.')}"
