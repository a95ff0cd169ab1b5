"""Preparing a document for speech: :class:`Document` → :class:`PreparedDocument`.

Each paragraph is cleaned of what should not be spoken (footnote markers, markup,
unspeakable characters; URLs shortened to their host), split into sentences (sentencex),
packed into :class:`TextChunk` s of at most the engine's input limit, never cutting a word
(an over-long sentence is cut at its best clause boundary), and the lexicon applied.
Everything dropped or rewritten lands in a :class:`PrepReport`.

A chunk never crosses a paragraph: the pause between two chunks is then a sentence pause
(same paragraph) or a paragraph pause, and a lexicon change re-synthesises only the chunks
whose text contains the changed word.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from voxflow.errors import ConfigError, TextError
from voxflow.narrate.document import (
    ChunkKind,
    Document,
    Notes,
    PreparedChapter,
    PreparedDocument,
    PrepNote,
    PrepReport,
    TextChunk,
)
from voxflow.narrate.lexicon import Lexicon
from voxflow.narrate.words import end_sentence, year_words

DEFAULT_MAX_CHARS = 4096

# --- cleaning ---------------------------------------------------------------------------

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


def clean_text(text: str, notes: Notes | None = None, *, latin_only: bool = True) -> str:
    """One paragraph made fit to speak: markers and markup gone, URLs shortened, whitespace
    normalised, characters the voice cannot speak dropped. Returns "" when nothing is left."""
    notes = notes or Notes()
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


def _emphasis_capitals(text: str, notes: Notes) -> str:
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


def _say_url(url: str, notes: Notes) -> str:
    trail = ""
    while url and url[-1] in ".,;:!?":
        trail, url = url[-1] + trail, url[:-1]
    host = re.sub(r"^(?:https?|ftp)://", "", url, flags=re.I).split("/", 1)[0].split("?")[0]
    host = re.sub(r"^www\.", "", host, flags=re.I).split("@")[-1].split(":")[0]
    notes.add("url", f"{url} read as {host}")
    return host + trail


def _say_email(m: re.Match[str], notes: Notes) -> str:
    spoken = f"{m.group(1)} at {m.group(2)}"
    notes.add("url", f"{m.group(0)} read as {spoken}")
    return spoken


def _say_year(m: re.Match[str], notes: Notes) -> str:
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
    notes = Notes()
    notes.items.extend(doc.notes)
    chapters: list[PreparedChapter] = []
    for chapter in doc.chapters:
        notes.chapter = chapter.index
        paragraphs = [p for p in (clean_text(p, notes, latin_only=latin_only) for p in chapter.paragraphs) if p]
        if not paragraphs:
            notes.add("empty", f"chapter {chapter.title!r} has nothing to speak: left out")
            continue
        index = len(chapters)
        title = clean_text(chapter.title, Notes(), latin_only=latin_only) or f"Part {index + 1}"
        spoken_title = clean_text(chapter.spoken_title or chapter.title, Notes(), latin_only=latin_only) or title
        chunks: list[TextChunk] = []
        heading_parts = _sentence_parts(
            end_sentence(spoken_title),
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
    notes: Notes,
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


def _pack(
    parts: list[tuple[str, str]], chapter: int, first_seq: int, kind: ChunkKind, max_chars: int
) -> list[TextChunk]:
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
    opening = [end_sentence(title)]
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
