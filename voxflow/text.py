"""Corpus reading, text preparation, sentence chunking and the pronunciation lexicon.

A document becomes speech in three steps, each a pure function a test can call:

read_document:     bytes → :class:`Document` — chapters of plain paragraphs. Plain text is
                   decoded with its detected encoding and cut at heading lines ("Chapter 3",
                   "CHAPTER III.", "III."); Markdown headings are chapters and its markup is
                   never read aloud; EPUB follows the spine, titles come from the table of
                   contents, and the cover image is kept for the tags.
prepare_document:  :class:`Document` → :class:`PreparedDocument` — each paragraph cleaned of
                   what should not be spoken (footnote markers, markup, unspeakable
                   characters; URLs shortened to their host), split into sentences (sentencex),
                   packed into :class:`TextChunk` s of at most the engine's input limit, never
                   cutting a word (an over-long sentence is cut at its best clause boundary),
                   and the lexicon applied. Everything dropped or rewritten lands in a
                   :class:`PrepReport`.

A chunk never crosses a paragraph: the pause between two chunks is then a sentence pause
(same paragraph) or a paragraph pause, and a lexicon change re-synthesises only the chunks
whose text contains the changed word.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from voxflow.errors import ConfigError, TextError
from voxflow.fsnames import printable_name
from voxflow.models import language_code

TEXT_EXTENSIONS = {"txt": "txt", "text": "txt", "md": "md", "markdown": "md", "epub": "epub"}
DEFAULT_MAX_CHARS = 4096
MAX_HEADING_CHARS = 90
EXAMPLES_PER_KIND = 12


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class PrepNote:
    """One thing the reader or the preparation dropped or rewrote."""

    kind: str  # encoding, boilerplate, markup, footnote, url, image, table, code, number,
    #            unspeakable, capitals, split, empty, front-matter
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
    format: str  # txt | md | epub
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
    kind: str  # "heading" | "body" | "credits"
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


class _Notes:
    """Collects :class:`PrepNote` s while reading and preparing."""

    def __init__(self) -> None:
        self.items: list[PrepNote] = []
        self.chapter: int | None = None

    def add(self, kind: str, detail: str) -> None:
        self.items.append(PrepNote(kind, _clip(detail), self.chapter))


def _clip(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


# --------------------------------------------------------------------------- reading


def document_format(name: str) -> str | None:
    """'txt', 'md' or 'epub' for a file name, None for anything else."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name.rsplit("/", 1)[-1] else ""
    return TEXT_EXTENSIONS.get(ext)


def read_document(uri: str, data: bytes | None = None, *, fmt: str | None = None) -> Document:
    """Read a .txt, .md or .epub document (``data``: its bytes, if already in hand).

    Raises TextError with a message a user can act on: empty, binary, damaged, unreadable.
    """
    from voxflow.sources import local_copy, resolve

    fmt = fmt or document_format(uri)
    if fmt is None:
        raise TextError(f"not a supported document type (use .txt, .md or .epub): {uri}")
    if data is None:
        fs, path = resolve(uri)
        try:
            if fmt == "epub":
                with local_copy(uri, suffix=".epub") as local:
                    return read_epub(local, uri=uri)
            with fs.open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise TextError(f"cannot read the file: {exc.strerror or exc}") from exc
    if fmt == "epub":
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".epub") as tmp:
            tmp.write(data)
            tmp.flush()
            return read_epub(tmp.name, uri=uri)
    notes = _Notes()
    text, encoding = decode_text(data)
    if encoding not in ("utf-8", "ascii"):
        notes.add("encoding", f"decoded as {encoding} (not UTF-8)")
    stem = _stem(uri)
    if fmt == "md":
        return _markdown_document(uri, text, stem, encoding, notes)
    return _plain_document(uri, text, stem, encoding, notes)


def _stem(uri: str) -> str:
    name = printable_name(uri.rstrip("/").rsplit("/", 1)[-1])
    return name.rsplit(".", 1)[0] if "." in name else name


def pretty_title(stem: str) -> str:
    """'the_red-headed_league' → 'The Red-Headed League' (a title from a file name)."""
    words = re.sub(r"[_]+|\s+", " ", stem).strip().split(" ")
    return " ".join(_cap(w) for w in words if w) or "Untitled"


def _cap(word: str) -> str:
    return "-".join(p[:1].upper() + p[1:] for p in word.split("-"))


_MAGIC_BINARY = (
    (b"PK\x03\x04", "a zip archive"),
    (b"%PDF", "a PDF"),
    (b"\x89PNG", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"ID3", "an MP3"),
    (b"RIFF", "a RIFF (WAV/AVI) file"),
    (b"fLaC", "a FLAC file"),
    (b"OggS", "an Ogg file"),
    (b"\x7fELF", "an executable"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"MZ", "an executable"),
)
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


# Single-byte Latin code pages that charset-normalizer confuses on short Western texts
# (it happily reads "naïve" in cp1252 as Baltic "naļve" in cp1257).
_SINGLE_BYTE_LATIN = re.compile(
    r"^(cp125[0247-8]|cp775|cp850|cp437|iso8859_(?:[1-4]|9|1[03-6])|latin_\d|mac_(?:roman|latin2|iceland)|hp_roman8)$"
)
# A Latin-1 symbol between two letters: what a Central European code page looks like when
# read as cp1252 ("wi¹zaæ" for "wiązać"), so not Western text.
_SYMBOL_IN_WORD = re.compile(
    r"[A-Za-z\u00c0-\u00ff][\u0080-\u00bf\u00d7\u00f7\u0160\u0161\u017d\u017e\u0192\u02c6\u02dc\u2020-\u2122][A-Za-z\u00c0-\u00ff]"
)


def _western(data: bytes) -> str | None:
    """The text as cp1252 (the usual code page of older Western texts) if that reads as
    plausible text, else None."""
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    return None if _SYMBOL_IN_WORD.search(text) else text


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding) of a text file: BOM, then strict UTF-8, then charset-normalizer.

    TextError for an empty file or one that is not text at all.
    """
    if not data:
        raise TextError("the file is empty (0 bytes): nothing to narrate")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding).lstrip("\ufeff"), encoding.replace("-sig", "")
            except UnicodeDecodeError:
                break
    for magic, what in _MAGIC_BINARY:
        if data.startswith(magic):
            raise TextError(f"not a text file: it looks like {what} (binary content)")
    head = data[:65536]
    if b"\x00" in head:
        raise TextError("not a text file: binary content (NUL bytes)")
    try:
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is None:
            raise TextError("not a text file: no text encoding fits its bytes") from None
        text, encoding = str(best), best.encoding
        western = _western(data) if _SINGLE_BYTE_LATIN.match(encoding) else None
        if western is not None and encoding == "cp1254" and re.search("[ðýþÐÝÞ]", western):
            western = None  # Turkish letters, not Icelandic ones
        if western is not None:
            text, encoding = western, "cp1252"
    controls = sum(1 for ch in text[:65536] if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t\f\v")
    if controls > max(8, len(text[:65536]) // 200):
        raise TextError("not a text file: binary content (control characters)")
    return text, encoding


# --- plain text ------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_NUMBER_WORDS = _words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty"
)
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORDINAL_WORDS = _words(
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
    "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth"
)
_NUM_TOKEN = r"\d{1,4}|[IVXLCDM]+|[ivxlcdm]+|" + "|".join(_NUMBER_WORDS[1:]) + "|" + "|".join(_ORDINAL_WORDS)
_HEADING_WORD = r"chapter|book|part|volume|stave|letter|canto|section|act|scene"
_KEYWORD_HEADING = re.compile(
    rf"^(?P<word>{_HEADING_WORD})\s+(?P<num>{_NUM_TOKEN})\b(?P<sep>[.:\-—–]?)\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
_NAMED_HEADING = re.compile(
    r"^(?P<word>prologue|epilogue|preface|introduction|foreword|"
    r"afterword)\b[.:]?\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
_ROMAN_HEADING = re.compile(r"^(?P<num>[IVXLCDM]{1,8})(?P<sep>\.?)(?:\s+(?P<rest>[A-Z].{0,80}))?$")
_VALID_ROMAN = re.compile(r"^M{0,3}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})$")
_META_LINE = re.compile(r"^(title|author|language|translator)\s*:\s*(.+)$", re.IGNORECASE)
_GUTENBERG_START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
_GUTENBERG_END = re.compile(r"^\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)


def roman_to_int(text: str) -> int | None:
    """The value of a valid Roman numeral ('XIV' → 14), else None."""
    text = text.upper()
    if not text or not _VALID_ROMAN.match(text):
        return None
    values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
    total = 0
    for a, b in zip(text, text[1:] + " ", strict=True):
        v = values[a]
        total += -v if b != " " and values[b] > v else v
    return total


def number_words(n: int) -> str:
    """English words for 0 ≤ n < 1 000 000 ('forty-two')."""
    if n < 21:
        return _NUMBER_WORDS[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_NUMBER_WORDS[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_NUMBER_WORDS[hundreds]} hundred" + (f" and {number_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    words = f"{number_words(thousands)} thousand"
    if rest:
        words += (" and " if rest < 100 else " ") + number_words(rest)
    return words


def _heading_number(token: str) -> int | None:
    if token.isdigit():
        return int(token)
    low = token.lower()
    if low in _NUMBER_WORDS:
        return _NUMBER_WORDS.index(low)
    if low in _ORDINAL_WORDS:
        return _ORDINAL_WORDS.index(low) + 1
    return roman_to_int(token)


@dataclass(frozen=True, slots=True)
class HeadingMatch:
    title: str  # display title ("Chapter III. Down the Rabbit-Hole")
    spoken: str  # "Chapter three. Down the Rabbit-Hole."
    kind: str  # keyword | roman | named
    has_rest: bool


def match_heading(line: str) -> HeadingMatch | None:
    """A chapter heading in plain text: 'Chapter 3', 'CHAPTER III. Title', 'III.', 'Prologue'."""
    line = " ".join(line.split())
    if not line or len(line) > MAX_HEADING_CHARS:
        return None
    if m := _KEYWORD_HEADING.match(line):
        number = _heading_number(m["num"])
        rest = m["rest"].strip()
        if number is None or (rest and not _title_like(rest)):
            return None
        word = _cap(m["word"].lower())
        num_display = m["num"].upper() if roman_to_int(m["num"]) else m["num"]
        if m["num"].lower() in _NUMBER_WORDS or m["num"].lower() in _ORDINAL_WORDS:
            num_display = _cap(m["num"].lower())
        title = f"{word} {num_display}" + (f". {_title_case(rest)}" if rest else "")
        spoken = f"{word} {number_words(number)}" + (f". {_title_case(rest)}" if rest else "")
        return HeadingMatch(title, _end_sentence(spoken), "keyword", bool(rest))
    if m := _ROMAN_HEADING.match(line):
        number = roman_to_int(m["num"])
        rest = (m["rest"] or "").strip()
        if number is None or (rest and (not m["sep"] or not _title_like(rest))):
            return None
        title = m["num"] + (f". {_title_case(rest)}" if rest else "")
        spoken = _cap(number_words(number)) + (f". {_title_case(rest)}" if rest else "")
        return HeadingMatch(title, _end_sentence(spoken), "roman", bool(rest))
    if m := _NAMED_HEADING.match(line):
        rest = m["rest"].strip()
        if rest and not _title_like(rest):
            return None
        title = _cap(m["word"].lower()) + (f". {_title_case(rest)}" if rest else "")
        return HeadingMatch(title, _end_sentence(title), "named", bool(rest))
    return None


def _title_like(text: str) -> bool:
    """A short heading title, not a sentence of prose."""
    words = text.split()
    if not words or len(words) > 12 or len(text) > 80:
        return False
    if text.isupper():
        return True
    capitals = sum(1 for w in words if w[:1].isupper() or not w[:1].isalpha())
    return capitals >= max(1, len(words) // 2) and not text.rstrip().endswith((",", ";"))


def _subtitle_like(line: str) -> bool:
    """A chapter's title on the line after its number: title-like, and not a sentence
    (a line in capitals may end with a full stop: "LOOMINGS.")."""
    return _title_like(line) and (line.isupper() or not line.rstrip().endswith((".", "!", "?")))


def _title_case(text: str) -> str:
    """All-capital titles become title case; anything else is kept as written."""
    text = " ".join(text.split()).strip()
    if not text.isupper():
        return text.rstrip(".")
    small = {
        "a",
        "an",
        "and",
        "as",
        "at",
        "but",
        "by",
        "for",
        "in",
        "of",
        "on",
        "or",
        "the",
        "to",
        "with",
        "from",
        "into",
    }
    words = []
    for i, w in enumerate(text.lower().split()):
        words.append(w if i and w in small else _cap_word(w))
    return " ".join(words).rstrip(".")


def _cap_word(word: str) -> str:
    roman = re.sub(r"[^a-z]", "", word)
    if roman and roman_to_int(roman) and len(roman) > 1:
        return word.upper()
    return "-".join(p[:1].upper() + p[1:] for p in word.split("-"))


def _end_sentence(text: str) -> str:
    text = text.strip()
    return text if text[-1:] in ".!?…" else text + "."


def _paragraph_blocks(text: str) -> list[str]:
    """Blank-line separated blocks, with their line breaks kept."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    return [b for b in re.split(r"\n[ \t]*\n", text) if b.strip()]


def _plain_document(uri: str, text: str, stem: str, encoding: str, notes: _Notes) -> Document:
    text = _strip_gutenberg(text, notes)
    meta: dict[str, str] = {}
    blocks = _paragraph_blocks(text)
    chapters: list[tuple[str, str, list[str]]] = []  # (title, spoken, paragraphs)
    preamble: list[str] = []
    romans = 0
    pending_subtitle = False
    for block in blocks:
        lines = [ln.strip() for ln in block.strip().split("\n") if ln.strip()]
        if not chapters and len(lines) <= 3 and all(_META_LINE.match(ln) for ln in lines):
            for ln in lines:
                m = _META_LINE.match(ln)
                assert m is not None
                meta.setdefault(m[1].lower(), m[2].strip())
            continue
        heading = match_heading(lines[0]) if len(lines) <= 2 else None
        if heading and len(lines) == 2 and not _subtitle_like(lines[1]):
            heading = None
        if heading:
            title, spoken = heading.title, heading.spoken
            if len(lines) == 2 and not heading.has_rest:
                sub = _title_case(lines[1])
                title, spoken = f"{title}. {sub}", _end_sentence(f"{spoken.rstrip('.')}. {sub}")
            romans += heading.kind == "roman"
            chapters.append((title, spoken, []))
            pending_subtitle = len(lines) == 1 and not heading.has_rest
            continue
        if pending_subtitle and len(lines) == 1 and _subtitle_like(lines[0]) and not chapters[-1][2]:
            title, spoken, _ = chapters[-1]
            sub = _title_case(lines[0])
            chapters[-1] = (f"{title}. {sub}", _end_sentence(f"{spoken.rstrip('.')}. {sub}"), [])
            pending_subtitle = False
            continue
        pending_subtitle = False
        paragraph = " ".join(lines)
        (chapters[-1][2] if chapters else preamble).append(paragraph)
    title = meta.get("title") or pretty_title(stem)
    if chapters and romans == len(chapters) and romans < 2:
        # one lone "I." is more likely a line of text than a chapter heading
        only = chapters[0]
        preamble = [*preamble, only[0], *only[2]]
        chapters = []
    result: list[Chapter] = []
    if preamble and chapters:
        size = sum(len(p) for p in preamble)
        if size < 300 and all(len(p) < 100 for p in preamble):
            for p in preamble:
                notes.add("front-matter", f"dropped before the first chapter: {p}")
        else:
            result.append(Chapter(0, title, tuple(preamble)))
    elif preamble:
        result.append(Chapter(0, title, tuple(preamble)))
    for t, spoken, paras in chapters:
        result.append(Chapter(len(result), t, tuple(paras), spoken))
    return _text_document(uri, "txt", title, meta, result, encoding, notes)


def _text_document(
    uri: str, fmt: str, title: str, meta: dict[str, str], chapters: list[Chapter], encoding: str, notes: _Notes
) -> Document:
    """A txt or Markdown document: author and language from its header or front matter."""
    return Document(
        uri=uri,
        format=fmt,
        title=title,
        author=meta.get("author"),
        chapters=tuple(chapters),
        language=_language_code(meta.get("language")),
        encoding=encoding,
        notes=tuple(notes.items),
    )


def _strip_gutenberg(text: str, notes: _Notes) -> str:
    start = _GUTENBERG_START.search(text)
    if start:
        header = text[: start.start()]
        notes.add("boilerplate", "Project Gutenberg header dropped")
        meta_lines = [ln for ln in header.splitlines() if _META_LINE.match(ln.strip())]
        text = "\n\n".join(ln.strip() for ln in meta_lines) + "\n\n" + text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        notes.add("boilerplate", "Project Gutenberg licence dropped")
        text = text[: end.start()]
    return text


def _language_code(value: str | None) -> str | None:
    """A document's declared language as ISO-639-1 (models.language_code), None if unknown."""
    code = language_code(value)
    return None if code == "und" else code


# --- Markdown --------------------------------------------------------------------------

_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FOOTNOTE_DEF = re.compile(r"^\[\^[^\]]+\]:")


def _markdown_document(uri: str, text: str, stem: str, encoding: str, notes: _Notes) -> Document:
    from markdown_it import MarkdownIt

    meta: dict[str, str] = {}
    if m := _FRONT_MATTER.match(text):
        for line in m[1].splitlines():
            if ":" in line:
                key, _, value = line.partition(":")
                meta[key.strip().lower()] = value.strip().strip("\"'")
        text = text[m.end() :]
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    levels = [int(t.tag[1]) for t in tokens if t.type == "heading_open"]
    book_heading: int | None = None  # token index of an h1 that is the book's title
    chapter_level = min(levels) if levels else 0
    if levels and levels.count(chapter_level) == 1 and levels[0] == chapter_level:
        deeper = [lv for lv in levels if lv > chapter_level]
        if deeper:
            book_heading = next(i for i, t in enumerate(tokens) if t.type == "heading_open")
            chapter_level = min(deeper)
    title = meta.get("title")
    chapters: list[tuple[str, list[str]]] = []
    preamble: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        kind = tok.type
        if kind == "heading_open":
            heading = _inline_text(tokens[i + 1], notes).strip()
            level = int(tok.tag[1])
            if i == book_heading:
                title = title or heading
            elif level == chapter_level and heading:
                chapters.append((heading, []))
            elif heading:
                (chapters[-1][1] if chapters else preamble).append(_end_sentence(heading))
            i += 3
            continue
        if kind == "paragraph_open":
            paragraph = _inline_text(tokens[i + 1], notes).strip()
            if _FOOTNOTE_DEF.match(paragraph):
                notes.add("footnote", f"footnote dropped: {paragraph}")
            elif paragraph:
                (chapters[-1][1] if chapters else preamble).append(paragraph)
            i += 3
            continue
        if kind == "table_open":
            rows = 0
            while i < len(tokens) and tokens[i].type != "table_close":
                rows += tokens[i].type == "tr_open"
                i += 1
            notes.add("table", f"table of {rows} rows dropped (tables are not read aloud)")
        elif kind in ("fence", "code_block"):
            notes.add("code", f"code block dropped: {tok.content}")
        elif kind == "html_block":
            if tok.content.strip().startswith("<!--"):
                notes.add("markup", f"HTML comment dropped: {tok.content}")
            else:
                notes.add("markup", f"HTML block dropped: {tok.content}")
        i += 1
    title = title or pretty_title(stem)
    result: list[Chapter] = []
    if preamble:
        result.append(Chapter(0, title, tuple(preamble)))
    for heading, paras in chapters:
        result.append(Chapter(len(result), heading, tuple(paras)))
    return _text_document(uri, "md", title, meta, result, encoding, notes)


def _inline_text(token: Any, notes: _Notes) -> str:
    """The words of an inline token: emphasis, links and code kept as text, the rest gone."""
    parts: list[str] = []
    for child in token.children or []:
        kind = child.type
        if kind == "text" or kind == "code_inline":
            parts.append(child.content)
        elif kind in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif kind == "link_open":
            href = child.attrs.get("href", "")
            if href and not href.startswith("#"):
                notes.add("url", f"link target not read: {href}")
        elif kind == "image":
            notes.add("image", f"image dropped: {child.content or child.attrs.get('src', '')}")
        elif kind == "html_inline":
            notes.add("markup", f"inline HTML dropped: {child.content}")
    return "".join(parts)


# --- EPUB ------------------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    _words(
        "p div li dd dt blockquote section article header footer figcaption pre tr address "
        "center main body h1 h2 h3 h4 h5 h6 ul ol dl hr"
    )
)
_DROP_TAGS = {
    "script": "markup",
    "style": "markup",
    "table": "table",
    "img": "image",
    "svg": "image",
    "image": "image",
    "math": "markup",
    "nav": "markup",
    "object": "markup",
    "video": "image",
    "audio": "markup",
    "iframe": "markup",
    "head": "",
    "title": "",
}
_NOTE_TYPES = {"footnote", "endnote", "rearnote", "note", "footnotes", "endnotes", "rearnotes"}


class _HtmlSink:
    """Events from walking an XHTML body: anchors, headings and paragraphs, in order."""

    def __init__(self, notes: _Notes, anchors: frozenset[str] = frozenset()) -> None:
        self.notes = notes
        self.anchors = anchors  # ids where a chapter starts (TOC fragments); others are ignored
        self.events: list[tuple[str, Any]] = []
        self.buffer: list[str] = []

    def add(self, text: str | None) -> None:
        if text:
            self.buffer.append(text)

    def flush(self) -> None:
        text = " ".join("".join(self.buffer).split())
        self.buffer = []
        if text:
            self.events.append(("para", text))


def _tag(el: Any) -> str:
    tag = el.tag if isinstance(el.tag, str) else ""
    return tag.rsplit("}", 1)[-1].lower()


def _epub_type(el: Any) -> set[str]:
    value = ""
    for key, val in el.attrib.items():
        if key.rsplit("}", 1)[-1].split(":")[-1] in ("type", "role"):
            value += " " + val
    return {v.split(":")[-1].replace("doc-", "") for v in value.split()}


def _walk_html(el: Any, sink: _HtmlSink) -> None:
    tag = _tag(el)
    if not tag:  # comment or processing instruction
        return
    kinds = _epub_type(el)
    if tag in _DROP_TAGS:
        what = _DROP_TAGS[tag]
        if what:
            detail = el.get("alt") or " ".join("".join(el.itertext()).split())
            sink.notes.add(what, f"{tag} dropped: {detail}" if detail else f"{tag} dropped")
        return
    if kinds & _NOTE_TYPES or tag == "aside":
        sink.notes.add("footnote", "note dropped: " + " ".join("".join(el.itertext()).split()))
        return
    if kinds & {"noteref"} or (tag == "sup" and _looks_like_marker(el)):
        sink.notes.add("footnote", "footnote marker dropped: " + "".join(el.itertext()).strip())
        return
    if el.get("id") in sink.anchors:  # a chapter starts here (page anchors are ignored)
        sink.flush()
        sink.events.append(("anchor", el.get("id")))
    if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
        sink.flush()
        text = " ".join("".join(_visible_text(el, sink.notes)).split())
        if text:
            sink.events.append(("heading", text))
        return
    block = tag in _BLOCK_TAGS
    if block:
        sink.flush()
    if tag == "br":
        sink.add(" ")
    sink.add(el.text)
    for child in el:
        _walk_html(child, sink)
        sink.add(child.tail)
    if block:
        sink.flush()


def _looks_like_marker(el: Any) -> bool:
    """A superscript that is a note reference (a number, a symbol, or a link), not '19th'."""
    text = "".join(el.itertext()).strip()
    linked = any(_tag(a) == "a" and a.get("href") for a in el.iter())
    return bool(re.fullmatch(r"\[?[\d*†‡§]{1,3}\]?", text)) or (linked and len(text) <= 4)


def _visible_text(el: Any, notes: _Notes) -> list[str]:
    """Text of an element without its dropped parts (note markers, images …)."""
    sink = _HtmlSink(notes)
    sink.add(el.text)
    for child in el:
        _walk_html(child, sink)
        sink.add(child.tail)
    sink.flush()
    return [text for kind, text in sink.events if kind in ("para", "heading")]


def read_epub(path: str, *, uri: str | None = None) -> Document:
    """Spine order, titles from the table of contents (NCX or nav), cover kept."""
    import zipfile

    import ebooklib
    from ebooklib import epub
    from lxml import etree
    from lxml import html as lxml_html

    uri = uri or path
    notes = _Notes()
    if Path(path).stat().st_size == 0:
        raise TextError("the file is empty (0 bytes): nothing to narrate")
    try:
        book = epub.read_epub(path, options={"ignore_ncx": False})
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise TextError(f"not a readable EPUB: truncated or damaged zip ({exc})") from exc
    except Exception as exc:  # ebooklib raises KeyError, EpubException, lxml errors …
        raise TextError(f"not a readable EPUB ({type(exc).__name__}: {exc})") from exc
    title = _epub_meta(book, "title") or pretty_title(_stem(uri))
    author = _epub_meta(book, "creator")
    language = _language_code(_epub_meta(book, "language"))
    toc = _flatten_toc(book.toc)
    by_file: dict[str, list[tuple[str | None, str]]] = {}
    for href, label in toc:
        name, _, frag = href.partition("#")
        by_file.setdefault(_norm_href(name), []).append((frag or None, label))
    chapters: list[tuple[str, list[str]]] = []
    for idref, linear in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT or linear == "no":
            continue
        if isinstance(item, epub.EpubNav) or "nav" in (getattr(item, "properties", None) or []):
            continue
        try:
            content = item.get_content()
            root = lxml_html.document_fromstring(content) if content.strip() else None
        except (etree.ParserError, ValueError) as exc:
            notes.add("markup", f"unreadable spine document {item.get_name()} skipped ({exc})")
            continue
        if root is None:
            continue
        body = root.find(".//body")
        entries = by_file.get(_norm_href(item.get_name()), [])
        sink = _HtmlSink(notes, frozenset(frag for frag, _label in entries if frag))
        _walk_html(body if body is not None else root, sink)
        sink.flush()
        _epub_chapters(sink.events, entries, chapters, title, bool(toc))
    cover, cover_mime = _epub_cover(book)
    result = tuple(Chapter(i, t, tuple(p)) for i, (t, p) in enumerate(chapters))
    return Document(
        uri=uri,
        format="epub",
        title=title,
        author=author,
        chapters=result,
        language=language,
        cover=cover,
        cover_mime=cover_mime,
        encoding="utf-8",
        notes=tuple(notes.items),
    )


def _epub_chapters(
    events: list[tuple[str, Any]],
    entries: list[tuple[str | None, str]],
    chapters: list[tuple[str, list[str]]],
    book_title: str,
    has_toc: bool,
) -> None:
    """Add one spine document's text to ``chapters``: a new chapter where the TOC points
    (the file, or an anchor in it); a file the TOC does not name continues the chapter before
    it. Without any TOC every file is a chapter titled by its first heading."""
    starts = {frag: label for frag, label in entries if frag}
    whole = next((label for frag, label in entries if frag is None), None)
    fresh = False
    if whole is not None:
        chapters.append((whole, []))
        fresh = True
    elif not has_toc and any(kind == "para" for kind, _ in events):
        first = next((v for k, v in events if k == "heading"), None)
        chapters.append((first or f"Section {len(chapters) + 1}", []))
        fresh = True
    for kind, value in events:
        if kind == "anchor":
            if value in starts:
                chapters.append((starts.pop(value), []))
                fresh = True
            continue
        if not chapters:  # text before the first chapter the TOC names
            chapters.append((value if kind == "heading" else book_title, []))
            if kind == "heading":
                continue
        title, paragraphs = chapters[-1]
        if kind == "heading" and fresh and not paragraphs and _same_words(value, title):
            fresh = False
            continue  # the chapter's own heading: it is read from the title instead
        paragraphs.append(_end_sentence(value) if kind == "heading" else value)
        fresh = False


def _same_words(a: str, b: str) -> bool:
    def words(s: str) -> list[str]:
        return re.findall(r"\w+", s.lower())

    wa, wb = words(a), words(b)
    return bool(wa) and (
        wa == wb or (len(wa) <= len(wb) and wb[-len(wa) :] == wa) or (len(wb) <= len(wa) and wa[-len(wb) :] == wb)
    )


def _norm_href(href: str) -> str:
    from urllib.parse import unquote

    return unquote(href).lstrip("./").rsplit("/", 1)[-1].lower()


def _flatten_toc(toc: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if toc is not None and not isinstance(toc, list | tuple):
        toc = [toc]
    for entry in toc or []:
        if isinstance(entry, tuple | list) and len(entry) == 2:
            section, children = entry
            href = getattr(section, "href", None)
            if href:
                out.append((href, (section.title or "").strip()))
            out.extend(_flatten_toc(children))
        else:
            href = getattr(entry, "href", None)
            if href:
                out.append((href, (getattr(entry, "title", "") or "").strip()))
    return [(href, label) for href, label in out if label]


def _epub_meta(book: Any, name: str) -> str | None:
    values = book.get_metadata("DC", name)
    for value, _attrs in values or []:
        if value and str(value).strip():
            return " ".join(str(value).split())
    return None


def _epub_cover(book: Any) -> tuple[bytes | None, str | None]:
    import ebooklib

    candidates = list(book.get_items_of_type(ebooklib.ITEM_COVER))
    for _value, attrs in book.get_metadata("OPF", "cover") or []:
        item = book.get_item_with_id(attrs.get("content", ""))
        if item is not None:
            candidates.append(item)
    for item in book.get_items_of_type(ebooklib.ITEM_IMAGE):
        if "cover-image" in (getattr(item, "properties", None) or []):
            candidates.insert(0, item)
        elif "cover" in (item.get_id() or "").lower() or "cover" in item.get_name().lower():
            candidates.append(item)
    for item in candidates:
        mime = getattr(item, "media_type", "") or ""
        data = item.get_content()
        if data and mime.startswith("image/"):
            return data, mime
    return None, None


# --------------------------------------------------------------------------- preparation

_SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹"
_SUPERSCRIPT_MARK = re.compile(rf"(?<=[\w.,;:!?\"'’”)])[{_SUPERSCRIPTS}]+")
_BRACKET_NOTE = re.compile(r"\s?\[(?:\^[\w-]+|\d{1,3}|[a-z]|\*|†|‡)\]")
_INLINE_FOOTNOTE = re.compile(r"\[(?:Footnote|Note|Sidenote)\b[^\]]{0,2000}\]", re.IGNORECASE)
_ILLUSTRATION = re.compile(r"\[Illustration(?::[^\]]{0,500})?\]", re.IGNORECASE)
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>\n]{0,200}>")
_URL = re.compile(r"\b(?:https?://|ftp://|www\.)[^\s<>()\[\]{}\"']+", re.IGNORECASE)
# Each pattern that starts with a run of characters starts only where that run starts
# (the negative lookbehinds): tried at every point of a long run, it would be quadratic.
_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-]+)@([\w-]+(?:\.[\w-]+)+)\b")
_EMPHASIS = re.compile(r"(?<![\w*_])([_*]{1,2})(?=\S)([^_*\n]{1,300}?)(?<=\S)\1(?![\w*_])")
_DASHES = re.compile(r"(?<!\s)\s*(?:--+|—)\s*")
_CAPS_RUN = re.compile(r"\b[A-Z][A-Z'’-]*(?:[ ,;:]+[A-Z][A-Z'’-]*)*\b")
_YEAR = re.compile(
    r"\b(in|since|until|till|from|by|of|about|circa|year|summer|winter|spring|"
    r"autumn)\s+(1[1-9]\d\d)\b(?!\s*(?:%|[.,]\d|[a-z]+s\b))",
    re.IGNORECASE,
)
_SPACE_BEFORE_PUNCT = re.compile(r"(?<!\s)\s+([,.;:!?…])")
_LATIN_PUNCT_OK = frozenset(["Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Pc", "Sc", "Sm", "Nd", "Zs"])


def year_words(year: int) -> str:
    """1865 → 'eighteen sixty-five', 1900 → 'nineteen hundred', 1905 → 'nineteen oh-five'."""
    high, low = divmod(year, 100)
    if low == 0:
        return f"{number_words(high)} hundred"
    if low < 10:
        return f"{number_words(high)} oh-{number_words(low)}"
    return f"{number_words(high)} {number_words(low)}"


@lru_cache(maxsize=65536)
def _speakable_char(ch: str, latin_only: bool) -> bool:
    if ch in " \n\t":
        return True
    cat = unicodedata.category(ch)
    if cat[0] in "CM" and ch != "\u200c":
        return cat[0] == "M" and not latin_only  # combining marks: fine outside Latin voices
    if cat in ("So", "Sk", "Co", "Cs", "Cn"):
        return False
    if not latin_only:
        return True
    if cat[0] == "L":
        return "LATIN" in unicodedata.name(ch, "")
    if cat == "Nd":
        return ch.isascii()
    return cat in _LATIN_PUNCT_OK or ch in "%&+=/°"


def clean_text(text: str, notes: _Notes | None = None, *, latin_only: bool = True) -> str:
    """One paragraph made fit to speak: markers and markup gone, URLs shortened, whitespace
    normalised, characters the voice cannot speak dropped. Returns "" when nothing is left."""
    notes = notes or _Notes()
    for pattern, kind, label in (
        (_INLINE_FOOTNOTE, "footnote", "footnote dropped"),
        (_ILLUSTRATION, "image", "illustration note dropped"),
        (_BRACKET_NOTE, "footnote", "footnote marker dropped"),
        (_SUPERSCRIPT_MARK, "footnote", "footnote marker dropped"),
        (_HTML_TAG, "markup", "markup dropped"),
    ):
        for m in pattern.finditer(text):
            notes.add(kind, f"{label}: {m.group(0).strip()}")
        text = pattern.sub("", text)
    text = unicodedata.normalize("NFKC", text)
    text = _URL.sub(lambda m: _say_url(m.group(0), notes), text)
    text = _EMAIL.sub(lambda m: _say_email(m, notes), text)
    emphasis = len(_EMPHASIS.findall(text))
    if emphasis:
        notes.add("markup", f"{emphasis} emphasis mark(s) removed")
        text = _EMPHASIS.sub(r"\2", text)
    text = _DASHES.sub(" — ", text)
    text = _emphasis_capitals(text, notes)
    text = _YEAR.sub(lambda m: _say_year(m, notes), text)
    unspeakable = {ch: None for ch in set(text) if not _speakable_char(ch, latin_only)}
    if unspeakable:
        kept = text.translate(dict.fromkeys(map(ord, unspeakable)))
        shown = "".join(ch for ch in dict.fromkeys(text) if ch in unspeakable)[:24]
        notes.add("unspeakable", f"{len(text) - len(kept)} character(s) the voice cannot speak dropped: {shown}")
        text = kept
    text = " ".join(text.split())
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = re.sub(r"\(\s*\)|\[\s*\]", "", text).strip()
    text = re.sub(r"^[—,;:]\s*", "", text)
    if not any(ch.isalnum() for ch in text):
        return ""
    return text


def _emphasis_capitals(text: str, notes: _Notes) -> str:
    """Words set in capitals for emphasis ("VERY", "TOOK A WATCH") read as words: a run of
    capitals with four letters or more and a vowel is lower-cased (a paragraph's first word
    and the pronoun I keep their capital). Short acronyms ("BBC", "US") are left alone."""
    letters = sum(map(str.isalpha, text))
    if not letters or sum(map(str.isupper, text)) >= letters / 2:
        return text
    changed: list[str] = []

    def lower(m: re.Match[str]) -> str:
        run = m.group(0)
        words = re.findall(r"[A-Z'’-]+", run)
        if sum(len(w.strip("'’-")) for w in words) < 4 or not re.search(r"[AEIOUY]", run):
            return run
        if len(words) == 1 and len(words[0].strip("'’-")) < 4:
            return run
        changed.append(run)
        low = re.sub(r"\bi(?=\b|['’])", "I", run.lower())
        return low[:1].upper() + low[1:] if m.start() == 0 else low

    text = _CAPS_RUN.sub(lower, text)
    if changed:
        notes.add(
            "capitals",
            f"{len(changed)} run(s) of capitals read as words: " + ", ".join(changed[:6]),
        )
    return text


def _say_url(url: str, notes: _Notes) -> str:
    trail = ""
    while url and url[-1] in ".,;:!?":
        trail, url = url[-1] + trail, url[:-1]
    host = re.sub(r"^(?:https?|ftp)://", "", url, flags=re.I).split("/", 1)[0].split("?")[0]
    host = re.sub(r"^www\.", "", host, flags=re.I).split("@")[-1].split(":")[0]
    notes.add("url", f"{url} read as {host}")
    return host + trail


def _say_email(m: re.Match[str], notes: _Notes) -> str:
    spoken = f"{m.group(1)} at {m.group(2)}"
    notes.add("url", f"{m.group(0)} read as {spoken}")
    return spoken


def _say_year(m: re.Match[str], notes: _Notes) -> str:
    words = year_words(int(m.group(2)))
    notes.add("number", f"{m.group(2)} read as the year {words}")
    return f"{m.group(1)} {words}"


# --- sentences and chunks ---------------------------------------------------------------


def split_sentences(text: str, language: str | None = "en") -> list[str]:
    """Sentences of a paragraph (sentencex: stateless, so safe in any thread, and linear in
    the text's length), stripped, none empty. Only whitespace is lost between the pieces."""
    from sentencex import segment

    lang = (language or "en").split("-")[0].split("_")[0].lower() or "en"
    merged: list[str] = []
    for part in segment(lang, text):  # a piece without a word ("." of "A..") joins the one before
        if merged and not any(ch.isalnum() for ch in part):
            merged[-1] += part
        else:
            merged.append(part)
    for k in range(len(merged) - 1):  # an opening quote left at a piece's end goes with the next
        if m := _DANGLING_OPENER.search(merged[k]):
            merged[k], merged[k + 1] = merged[k][: m.start()] + m.group(1), m.group(2) + merged[k + 1]
    return [p.strip() for p in merged if p.strip()]


_DANGLING_OPENER = re.compile(r"(\s)([\"'“‘«‹(\[¿¡]+)$")


# Clause boundaries, best first: (pattern, cut after the match (True) or before it)
_CLAUSE_BREAKS: tuple[tuple[re.Pattern[str], bool], ...] = (
    (re.compile(r"[;:]\s+"), True),
    (re.compile(r"\s*[—–]\s+"), True),
    (re.compile(r"[,)]\s+"), True),
    (
        re.compile(
            r"\s+(?=(?:and|but|or|nor|yet|so|because|which|who|whom|whose|that|while|"
            r"when|where|although|though|unless|until|whereas|if)\b)",
            re.IGNORECASE,
        ),
        False,
    ),
    (re.compile(r"\s+"), False),
)


def split_long(sentence: str, limit: int, *, min_fraction: float = 0.35) -> list[str]:
    """Cut a sentence longer than ``limit`` at its best clause boundaries, never in a word.

    The best boundary is the strongest kind (``;``/``:`` > dash > comma > conjunction >
    any space) found in the window between ``min_fraction × limit`` and ``limit``; the last
    such boundary wins. Only a single "word" longer than ``limit`` is ever cut inside.
    """
    parts: list[str] = []
    text = sentence.strip()
    at, end = 0, len(text)
    while end - at > limit:  # positions, not slices of the rest: linear in the sentence's length
        window = text[at : at + limit + 1]
        cut = _best_cut(window, limit, int(limit * min_fraction))
        head = window[:cut].rstrip()
        if head:
            parts.append(head)
        at += cut
        while at < end and text[at].isspace():
            at += 1
    if at < end:
        parts.append(text[at:])
    return parts


def _best_cut(text: str, limit: int, lowest: int) -> int:
    window = text[: limit + 1]
    first_word = len(window) - len(window.lstrip())  # a cut must leave a word before it
    for pattern, after in _CLAUSE_BREAKS:
        cuts = [m.end() if after else m.start() for m in pattern.finditer(window)]
        cuts = [c for c in cuts if lowest <= c <= limit and c > first_word]
        if cuts:
            return max(cuts)
    # no space in the whole window: one enormous "word"; the only place a cut is allowed
    return limit


@dataclass(frozen=True, slots=True)
class LexiconEntry:
    term: str
    say: str | None = None  # respelling, for every voice
    ipa: str | None = None  # phonemes, for voices that take them (Piper: [[ … ]])


@dataclass(frozen=True)
class Lexicon:
    """Pronunciation respellings applied to sentences before synthesis (whole words,
    case-insensitive). Later files override earlier ones (global, then per book)."""

    entries: tuple[LexiconEntry, ...] = ()
    sources: tuple[str, ...] = field(default=())

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> Lexicon:
        merged: dict[str, LexiconEntry] = {}
        used = []
        for raw in paths:
            path = Path(raw).expanduser()
            if not path.is_file():
                continue
            used.append(str(path))
            for entry in _read_lexicon(path):
                merged[entry.term.lower()] = entry
        return cls(tuple(merged.values()), tuple(used))

    def digest(self) -> str:
        blob = json.dumps([[e.term, e.say, e.ipa] for e in self.entries], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def _pattern(self) -> re.Pattern[str] | None:
        return _lexicon_pattern(tuple(e.term for e in self.entries))

    def apply(self, text: str, *, phonemes: bool = False) -> str:
        """``text`` with every lexicon word replaced by its respelling (or phonemes)."""
        pattern = self._pattern
        if pattern is None:
            return text
        table = {e.term.lower(): e for e in self.entries}

        def replace(m: re.Match[str]) -> str:
            entry = table[m.group(0).lower()]
            if phonemes and entry.ipa:
                return f"[[ {entry.ipa} ]]"
            return entry.say or m.group(0)

        return pattern.sub(replace, text)


@lru_cache(maxsize=64)
def _lexicon_pattern(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    if not terms:
        return None
    alternatives = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
    return re.compile(rf"(?<![\w'’-])(?:{alternatives})(?![\w'’-])", re.IGNORECASE)


def _read_lexicon(path: Path) -> list[LexiconEntry]:
    """A lexicon file: TOML (``[words]`` table of ``term = "respelling"`` or
    ``term = { say = "…", ipa = "…" }``) or lines ``term = respelling | ipa``."""
    entries: list[LexiconEntry] = []
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read lexicon {path}: {exc}") from exc
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(raw)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"lexicon {path} is not valid TOML: {exc}") from exc
        words = data.get("words", data)
        for term, value in words.items():
            if isinstance(value, str):
                entries.append(LexiconEntry(term, say=value))
            elif isinstance(value, dict):
                entries.append(LexiconEntry(term, say=value.get("say"), ipa=value.get("ipa")))
        return [e for e in entries if e.term.strip() and (e.say or e.ipa)]
    for n, line in enumerate(raw.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        term, sep, value = line.partition("=")
        if not sep or not term.strip():
            raise ConfigError(f"lexicon {path}:{n}: expected 'word = respelling [| ipa]'")
        say, _, ipa = value.partition("|")
        entries.append(LexiconEntry(term.strip(), say.strip() or None, ipa.strip() or None))
    return entries


def prepare_document(
    doc: Document,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    lexicon: Lexicon | None = None,
    phonemes: bool = False,
    latin_only: bool = True,
) -> PreparedDocument:
    """Clean, split and pack every chapter. TextError when nothing speakable is left."""
    if max_chars < 40:
        raise ConfigError(f"chunk limit of {max_chars} characters is too small")
    lexicon = lexicon or Lexicon()
    notes = _Notes()
    notes.items.extend(doc.notes)
    chapters: list[PreparedChapter] = []
    for chapter in doc.chapters:
        notes.chapter = chapter.index
        paragraphs = [p for p in (clean_text(p, notes, latin_only=latin_only) for p in chapter.paragraphs) if p]
        if not paragraphs:
            notes.add("empty", f"chapter {chapter.title!r} has nothing to speak: left out")
            continue
        index = len(chapters)
        title = clean_text(chapter.title, _Notes(), latin_only=latin_only) or f"Part {index + 1}"
        spoken_title = clean_text(chapter.spoken_title or chapter.title, _Notes(), latin_only=latin_only) or title
        chunks: list[TextChunk] = []
        heading_parts = _sentence_parts(
            _end_sentence(spoken_title),
            lexicon,
            phonemes,
            max_chars,
            notes,
            doc.language,
            split=False,
        )
        chunks.extend(_pack(heading_parts, index, 0, "heading", max_chars))
        for paragraph in paragraphs:
            parts = _sentence_parts(paragraph, lexicon, phonemes, max_chars, notes, doc.language)
            chunks.extend(_pack(parts, index, len(chunks), "body", max_chars))
        chapters.append(PreparedChapter(index, title, tuple(chunks), " ".join(paragraphs)))
    if not chapters:
        what = _nothing_reason(doc, notes.items)
        raise TextError(f"nothing to speak: {what}")
    return PreparedDocument(doc, tuple(chapters), PrepReport(tuple(notes.items)), max_chars)


def _no_space(text: str) -> str:
    return "".join(text.split())


def check_chunks(prepared: PreparedDocument) -> None:
    """Invariant: each chapter's body chunks, joined, are exactly its cleaned text once all
    whitespace is removed (nothing dropped, duplicated or reordered by sentence splitting,
    clause cutting or packing). TextError naming the chapter otherwise."""
    for chapter in prepared.chapters:
        if chapter.text is None:
            continue
        joined = _no_space("".join(c.text for c in chapter.body))
        expected = _no_space(chapter.text)
        if joined != expected:
            raise TextError(
                f"chapter {chapter.index + 1} ({chapter.title!r}): the chunks do not add up to the prepared "
                f"text ({len(joined)} of {len(expected)} non-space characters): not narrated"
            )


def _nothing_reason(doc: Document, notes: Sequence[PrepNote]) -> str:
    kinds = Counter(n.kind for n in notes)
    if not doc.chapters or not any(p.strip() for c in doc.chapters for p in c.paragraphs):
        if kinds.keys() & {"markup", "code", "table", "image", "footnote"}:
            return "the document holds only markup (" + ", ".join(sorted(kinds)) + ")"
        return "the document holds only whitespace"
    if kinds.get("unspeakable"):
        return "every character is one the voice cannot speak (emoji, other scripts)"
    return "the document holds only markup or symbols"


def _sentence_parts(
    paragraph: str,
    lexicon: Lexicon,
    phonemes: bool,
    max_chars: int,
    notes: _Notes,
    language: str | None,
    *,
    split: bool = True,
) -> list[tuple[str, str]]:
    """(display, spoken) sentence pieces of a paragraph, each spoken piece ≤ max_chars."""
    out: list[tuple[str, str]] = []
    sentences = split_sentences(paragraph, language) if split else [paragraph]
    for sentence in sentences:
        pieces = [sentence]
        limit = max_chars
        while True:
            spoken = [lexicon.apply(p, phonemes=phonemes) for p in pieces]
            if all(len(s) <= max_chars for s in spoken):
                break
            limit = int(limit * 0.8)
            pieces = [q for p in pieces for q in split_long(p, limit)]
        if len(pieces) > 1:
            notes.add(
                "split",
                f"a sentence of {len(sentence)} characters was cut into {len(pieces)} pieces at clause boundaries",
            )
        out.extend(zip(pieces, spoken, strict=True))
    return out


def _pack(parts: list[tuple[str, str]], chapter: int, first_seq: int, kind: str, max_chars: int) -> list[TextChunk]:
    chunks: list[TextChunk] = []
    group: list[tuple[str, str]] = []

    def emit(last: bool) -> None:
        if group:
            chunks.append(
                TextChunk(
                    chapter_index=chapter,
                    seq=first_seq + len(chunks),
                    kind=kind,
                    text=" ".join(d for d, _ in group),
                    spoken=" ".join(s for _, s in group),
                    sentences=tuple(d for d, _ in group),
                    weights=tuple(len(s) for _, s in group),
                    ends_paragraph=last,
                )
            )
            group.clear()

    size = 0
    for display, spoken in parts:
        if group and size + 1 + len(spoken) > max_chars:
            emit(False)
            size = 0
        size += (1 if group else 0) + len(spoken)
        group.append((display, spoken))
    emit(True)
    return chunks


def credits_chunks(
    title: str,
    author: str | None,
    narrator: str,
    *,
    lexicon: Lexicon | None = None,
    phonemes: bool = False,
) -> tuple[TextChunk, TextChunk]:
    """Opening ("Title. Written by …. Narrated by ….") and closing ("The End.") credits."""
    lexicon = lexicon or Lexicon()
    opening = [_end_sentence(title)]
    if author:
        opening.append(f"Written by {author}.")
    opening.append(f"Narrated by {narrator}.")
    closing = [
        f"The End. {title}" + (f", by {author}." if author else "."),
        f"Narrated by {narrator}.",
    ]

    def chunk(seq: int, sentences: list[str]) -> TextChunk:
        spoken = [lexicon.apply(s, phonemes=phonemes) for s in sentences]
        return TextChunk(
            -1,
            seq,
            "credits",
            " ".join(sentences),
            " ".join(spoken),
            tuple(sentences),
            tuple(len(s) for s in spoken),
        )

    return chunk(0, opening), chunk(1, closing)


__all__ = [
    "Chapter",
    "Document",
    "Lexicon",
    "LexiconEntry",
    "PrepNote",
    "PrepReport",
    "PreparedChapter",
    "PreparedDocument",
    "TextChunk",
    "check_chunks",
    "clean_text",
    "credits_chunks",
    "decode_text",
    "document_format",
    "match_heading",
    "number_words",
    "prepare_document",
    "read_document",
    "read_epub",
    "roman_to_int",
    "split_long",
    "split_sentences",
    "year_words",
]
