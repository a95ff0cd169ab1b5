"""Plain text: chapters cut at heading lines ("Chapter 3", "CHAPTER III. Title", "III.",
"Prologue"), an optional ``Title:``/``Author:`` header, Project Gutenberg boilerplate dropped."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from voxflow.narrate.document import Chapter, Document, Notes
from voxflow.narrate.read.common import pretty_title, text_document
from voxflow.narrate.words import (
    NUMBER_WORDS,
    ORDINAL_WORDS,
    capitalise,
    end_sentence,
    number_words,
    roman_to_int,
    words_of,
)

MAX_HEADING_CHARS = 90
_NUM_TOKEN = r"\d{1,4}|[IVXLCDM]+|[ivxlcdm]+|" + "|".join(NUMBER_WORDS[1:]) + "|" + "|".join(ORDINAL_WORDS)
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
_META_LINE = re.compile(r"^(title|author|language|translator)\s*:\s*(.+)$", re.IGNORECASE)
_GUTENBERG_START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
_GUTENBERG_END = re.compile(r"^\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$", re.I | re.M)
# words a title in capitals keeps in lower case (but for the first)
_SMALL_WORDS = frozenset(words_of("a an and as at but by for in of on or the to with from into"))


def _heading_number(token: str) -> int | None:
    if token.isdigit():
        return int(token)
    low = token.lower()
    if low in NUMBER_WORDS:
        return NUMBER_WORDS.index(low)
    if low in ORDINAL_WORDS:
        return ORDINAL_WORDS.index(low) + 1
    return roman_to_int(token)


@dataclass(frozen=True, slots=True)
class HeadingMatch:
    title: str  # display title ("Chapter III. Down the Rabbit-Hole")
    spoken: str  # "Chapter three. Down the Rabbit-Hole."
    kind: Literal["keyword", "roman", "named"]
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
        word = capitalise(m["word"].lower())
        num_display = m["num"].upper() if roman_to_int(m["num"]) else m["num"]
        if m["num"].lower() in NUMBER_WORDS or m["num"].lower() in ORDINAL_WORDS:
            num_display = capitalise(m["num"].lower())
        title = f"{word} {num_display}" + (f". {_title_case(rest)}" if rest else "")
        spoken = f"{word} {number_words(number)}" + (f". {_title_case(rest)}" if rest else "")
        return HeadingMatch(title, end_sentence(spoken), "keyword", bool(rest))
    if m := _ROMAN_HEADING.match(line):
        number = roman_to_int(m["num"])
        rest = (m["rest"] or "").strip()
        if number is None or (rest and (not m["sep"] or not _title_like(rest))):
            return None
        title = m["num"] + (f". {_title_case(rest)}" if rest else "")
        spoken = capitalise(number_words(number)) + (f". {_title_case(rest)}" if rest else "")
        return HeadingMatch(title, end_sentence(spoken), "roman", bool(rest))
    if m := _NAMED_HEADING.match(line):
        rest = m["rest"].strip()
        if rest and not _title_like(rest):
            return None
        title = capitalise(m["word"].lower()) + (f". {_title_case(rest)}" if rest else "")
        return HeadingMatch(title, end_sentence(title), "named", bool(rest))
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
    words = []
    for i, w in enumerate(text.lower().split()):
        words.append(w if i and w in _SMALL_WORDS else _cap_word(w))
    return " ".join(words).rstrip(".")


def _cap_word(word: str) -> str:
    """A title word capitalised; a Roman numeral ("xiv") in capitals."""
    roman = re.sub(r"[^a-z]", "", word)
    if roman and roman_to_int(roman) and len(roman) > 1:
        return word.upper()
    return capitalise(word)


def _paragraph_blocks(text: str) -> list[str]:
    """Blank-line separated blocks, with their line breaks kept."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")
    return [b for b in re.split(r"\n[ \t]*\n", text) if b.strip()]


def read_plain(uri: str, text: str, stem: str, encoding: str, notes: Notes) -> Document:
    """A plain-text document: chapters cut at heading lines, a Project Gutenberg header and
    licence dropped, a short front matter before the first chapter dropped."""
    text = _strip_gutenberg(text, notes)
    meta: dict[str, str] = {}
    chapters: list[tuple[str, str, list[str]]] = []  # (title, spoken, paragraphs)
    preamble: list[str] = []
    romans = 0
    pending_subtitle = False
    for block in _paragraph_blocks(text):
        lines = [ln.strip() for ln in block.strip().split("\n") if ln.strip()]
        if not chapters and _read_meta(lines, meta):
            continue
        heading = match_heading(lines[0]) if len(lines) <= 2 else None
        if heading and len(lines) == 2 and not _subtitle_like(lines[1]):
            heading = None
        if heading:
            title, spoken = heading.title, heading.spoken
            if len(lines) == 2 and not heading.has_rest:
                title, spoken = _with_subtitle(title, spoken, lines[1])
            romans += heading.kind == "roman"
            chapters.append((title, spoken, []))
            pending_subtitle = len(lines) == 1 and not heading.has_rest
            continue
        if pending_subtitle and len(lines) == 1 and _subtitle_like(lines[0]) and not chapters[-1][2]:
            title, spoken, _ = chapters[-1]
            chapters[-1] = (*_with_subtitle(title, spoken, lines[0]), [])
            pending_subtitle = False
            continue
        pending_subtitle = False
        (chapters[-1][2] if chapters else preamble).append(" ".join(lines))
    title = meta.get("title") or pretty_title(stem)
    if chapters and romans == len(chapters) and romans < 2:
        # one lone "I." is more likely a line of text than a chapter heading
        only = chapters[0]
        preamble = [*preamble, only[0], *only[2]]
        chapters = []
    return text_document(uri, "txt", title, meta, _chapters(title, preamble, chapters, notes), encoding, notes)


def _read_meta(lines: list[str], meta: dict[str, str]) -> bool:
    """Take a header block of ``Title:``/``Author:``/``Language:`` lines into ``meta``;
    False when the block is not one."""
    if len(lines) > 3:
        return False
    matches = [_META_LINE.match(ln) for ln in lines]
    if not all(matches):
        return False
    for m in matches:
        assert m is not None
        meta.setdefault(m[1].lower(), m[2].strip())
    return True


def _with_subtitle(title: str, spoken: str, line: str) -> tuple[str, str]:
    """A heading's (title, spoken) with the chapter's title from the line after it."""
    sub = _title_case(line)
    return f"{title}. {sub}", end_sentence(f"{spoken.rstrip('.')}. {sub}")


def _chapters(
    title: str, preamble: list[str], chapters: list[tuple[str, str, list[str]]], notes: Notes
) -> list[Chapter]:
    """The document's chapters: the text before the first heading is a chapter of its own
    (titled as the book) unless it is a few short lines of front matter, which are dropped."""
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
    return result


def _strip_gutenberg(text: str, notes: Notes) -> str:
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
