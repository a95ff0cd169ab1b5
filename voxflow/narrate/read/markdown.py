"""Markdown (CommonMark with tables): headings are chapters, the markup is never read aloud."""

from __future__ import annotations

import re
from typing import Any

from voxflow.narrate.document import Chapter, Document, Notes
from voxflow.narrate.read.common import pretty_title, text_document
from voxflow.narrate.words import end_sentence

_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FOOTNOTE_DEF = re.compile(r"^\[\^[^\]]+\]:")


def read_markdown(uri: str, text: str, stem: str, encoding: str, notes: Notes) -> Document:
    """A Markdown document: headings of the chapter level are chapters (a lone top heading
    above them is the book's title), deeper headings are read as sentences of their chapter;
    tables, code, HTML and footnote definitions are dropped (and noted)."""
    from markdown_it import MarkdownIt

    meta, text = _front_matter(text)
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    book_heading, chapter_level = _heading_levels(tokens)
    title = meta.get("title")
    chapters: list[tuple[str, list[str]]] = []
    preamble: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == "heading_open":
            heading = _inline_text(tokens[i + 1], notes).strip()
            if i == book_heading:
                title = title or heading
            elif int(tok.tag[1]) == chapter_level and heading:
                chapters.append((heading, []))
            elif heading:
                (chapters[-1][1] if chapters else preamble).append(end_sentence(heading))
            i += 3
        elif tok.type == "paragraph_open":
            paragraph = _inline_text(tokens[i + 1], notes).strip()
            if _FOOTNOTE_DEF.match(paragraph):
                notes.add("footnote", f"footnote dropped: {paragraph}")
            elif paragraph:
                (chapters[-1][1] if chapters else preamble).append(paragraph)
            i += 3
        else:
            i = _drop_block(tokens, i, notes) + 1
    title = title or pretty_title(stem)
    result = [Chapter(0, title, tuple(preamble))] if preamble else []
    for heading, paras in chapters:
        result.append(Chapter(len(result), heading, tuple(paras)))
    return text_document(uri, "md", title, meta, result, encoding, notes)


def _front_matter(text: str) -> tuple[dict[str, str], str]:
    """(``key: value`` pairs of a YAML-style front matter, the text after it)."""
    meta: dict[str, str] = {}
    if m := _FRONT_MATTER.match(text):
        for line in m[1].splitlines():
            if ":" in line:
                key, _, value = line.partition(":")
                meta[key.strip().lower()] = value.strip().strip("\"'")
        text = text[m.end() :]
    return meta, text


def _heading_levels(tokens: list[Any]) -> tuple[int | None, int]:
    """(token index of a heading that is the book's title, or None; the chapters' level):
    a single top-level heading that comes first, with deeper ones below it, is the title."""
    levels = [int(t.tag[1]) for t in tokens if t.type == "heading_open"]
    chapter_level = min(levels) if levels else 0
    if levels and levels.count(chapter_level) == 1 and levels[0] == chapter_level:
        deeper = [lv for lv in levels if lv > chapter_level]
        if deeper:
            return next(i for i, t in enumerate(tokens) if t.type == "heading_open"), min(deeper)
    return None, chapter_level


def _drop_block(tokens: list[Any], i: int, notes: Notes) -> int:
    """Note a block that is not read aloud (table, code, HTML) starting at token ``i``;
    the index of its last token."""
    tok = tokens[i]
    if tok.type == "table_open":
        rows = 0
        while i < len(tokens) and tokens[i].type != "table_close":
            rows += tokens[i].type == "tr_open"
            i += 1
        notes.add("table", f"table of {rows} rows dropped (tables are not read aloud)")
    elif tok.type in ("fence", "code_block"):
        notes.add("code", f"code block dropped: {tok.content}")
    elif tok.type == "html_block":
        if tok.content.strip().startswith("<!--"):
            notes.add("markup", f"HTML comment dropped: {tok.content}")
        else:
            notes.add("markup", f"HTML block dropped: {tok.content}")
    return i


def _inline_text(token: Any, notes: Notes) -> str:
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
