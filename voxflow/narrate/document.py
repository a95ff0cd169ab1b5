"""The records of narration: a document as read, its prepared chunks, and the notes on
what reading and preparation dropped or rewrote."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

EXAMPLES_PER_KIND = 12

DocumentFormat = Literal["txt", "md", "epub"]
ChunkKind = Literal["heading", "body", "credits"]
NoteKind = Literal[
    "encoding",
    "boilerplate",
    "markup",
    "footnote",
    "url",
    "image",
    "table",
    "code",
    "number",
    "unspeakable",
    "capitals",
    "split",
    "empty",
    "front-matter",
    "language",
]


@dataclass(frozen=True, slots=True)
class PrepNote:
    """One thing the reader or the preparation dropped or rewrote."""

    kind: NoteKind
    detail: str
    chapter: int | None = None


@dataclass(frozen=True, slots=True)
class Chapter:
    """A chapter as read: its title and its paragraphs (markup gone, not yet cleaned)."""

    index: int
    title: str
    paragraphs: tuple[str, ...]
    spoken_title: str = ""  # how the heading is read ("Chapter Three. …"); "" = the title


@dataclass(frozen=True, slots=True)
class Document:
    """A document as read from its file."""

    uri: str
    format: DocumentFormat
    title: str
    author: str | None
    chapters: tuple[Chapter, ...]
    language: str | None = None
    cover: bytes | None = None
    cover_mime: str | None = None
    encoding: str | None = None
    notes: tuple[PrepNote, ...] = ()


@dataclass(frozen=True, slots=True)
class TextChunk:
    """The unit sent to the engine: whole sentences of one paragraph (or one heading)."""

    chapter_index: int
    seq: int  # position in its chapter; the heading is 0
    kind: ChunkKind
    text: str  # what the read-along shows
    spoken: str  # what the engine receives (lexicon applied)
    sentences: tuple[str, ...]  # display text of each sentence (read-along cues)
    weights: tuple[int, ...]  # spoken length of each sentence, to place cues in the audio
    ends_paragraph: bool = True

    def cache_key(self, options_digest: str) -> str:
        """sha256 of (engine options, spoken text): the chunk-cache key."""
        return hashlib.sha256(f"{options_digest}\n{self.spoken}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PreparedChapter:
    index: int
    title: str
    chunks: tuple[TextChunk, ...]  # chunks[0] is the heading read aloud
    text: str | None = None  # the cleaned paragraphs, one space between: what the body chunks must add up to

    @property
    def heading(self) -> TextChunk:
        return self.chunks[0]

    @property
    def body(self) -> tuple[TextChunk, ...]:
        return self.chunks[1:]

    @property
    def n_chars(self) -> int:
        return sum(len(c.text) for c in self.chunks)

    @property
    def n_words(self) -> int:
        return sum(len(c.text.split()) for c in self.chunks)


@dataclass(frozen=True)
class PrepReport:
    """What the preparation dropped or rewrote, for the book's report file."""

    notes: tuple[PrepNote, ...]

    def counts(self) -> dict[str, int]:
        return dict(Counter(n.kind for n in self.notes))

    def as_dict(self) -> dict[str, Any]:
        examples: dict[str, list[dict[str, Any]]] = {}
        for note in self.notes:
            bucket = examples.setdefault(note.kind, [])
            if len(bucket) < EXAMPLES_PER_KIND:
                bucket.append({"chapter": note.chapter, "detail": note.detail})
        return {"counts": self.counts(), "examples": examples}

    def summary(self) -> str:
        counts = self.counts()
        return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "nothing dropped"


@dataclass(frozen=True)
class PreparedDocument:
    document: Document
    chapters: tuple[PreparedChapter, ...]
    report: PrepReport
    max_chars: int

    def chunks(self) -> Iterator[TextChunk]:
        for chapter in self.chapters:
            yield from chapter.chunks

    @property
    def n_chars(self) -> int:
        return sum(c.n_chars for c in self.chapters)

    @property
    def n_words(self) -> int:
        return sum(c.n_words for c in self.chapters)


class Notes:
    """Collects :class:`PrepNote` s while reading and preparing."""

    def __init__(self) -> None:
        self.items: list[PrepNote] = []
        self.chapter: int | None = None

    def add(self, kind: NoteKind, detail: str) -> None:
        self.items.append(PrepNote(kind, _clip(detail), self.chapter))


def _clip(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
