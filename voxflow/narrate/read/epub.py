"""EPUB: the spine in reading order, chapter titles from the table of contents (NCX or nav,
a chapter may start at an anchor inside a file), notes and images dropped, the cover kept."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from voxflow.errors import TextError
from voxflow.narrate.document import Chapter, Document, NoteKind, Notes
from voxflow.narrate.read.common import document_language, file_stem, pretty_title
from voxflow.narrate.words import end_sentence, words_of

_BLOCK_TAGS = frozenset(
    words_of(
        "p div li dd dt blockquote section article header footer figcaption pre tr address "
        "center main body h1 h2 h3 h4 h5 h6 ul ol dl hr"
    )
)
_DROP_TAGS: dict[str, NoteKind | None] = {  # None: dropped without a note
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
    "head": None,
    "title": None,
}
_NOTE_TYPES = {"footnote", "endnote", "rearnote", "note", "footnotes", "endnotes", "rearnotes"}


class _HtmlSink:
    """Events from walking an XHTML body: anchors, headings and paragraphs, in order."""

    def __init__(self, notes: Notes, anchors: frozenset[str] = frozenset()) -> None:
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


def _visible_text(el: Any, notes: Notes) -> list[str]:
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
    uri = uri or path
    notes = Notes()
    book = _open_epub(path)
    title = _epub_meta(book, "title") or pretty_title(file_stem(uri))
    toc = _flatten_toc(book.toc)
    by_file: dict[str, list[tuple[str | None, str]]] = {}
    for href, label in toc:
        name, _, frag = href.partition("#")
        by_file.setdefault(_norm_href(name), []).append((frag or None, label))
    chapters: list[tuple[str, list[str]]] = []
    for item in _spine_documents(book):
        root = _parse_xhtml(item, notes)
        if root is None:
            continue
        body = root.find(".//body")
        entries = by_file.get(_norm_href(item.get_name()), [])
        sink = _HtmlSink(notes, frozenset(frag for frag, _label in entries if frag))
        _walk_html(body if body is not None else root, sink)
        sink.flush()
        _epub_chapters(sink.events, entries, chapters, title, bool(toc))
    cover, cover_mime = _epub_cover(book)
    return Document(
        uri=uri,
        format="epub",
        title=title,
        author=_epub_meta(book, "creator"),
        chapters=tuple(Chapter(i, t, tuple(p)) for i, (t, p) in enumerate(chapters)),
        language=document_language(_epub_meta(book, "language")),
        cover=cover,
        cover_mime=cover_mime,
        encoding="utf-8",
        notes=tuple(notes.items),
    )


def _open_epub(path: str) -> Any:
    """The ebooklib book; TextError for an empty, truncated or damaged file."""
    import zipfile

    from ebooklib import epub

    if Path(path).stat().st_size == 0:
        raise TextError("the file is empty (0 bytes): nothing to narrate")
    try:
        return epub.read_epub(path, options={"ignore_ncx": False})
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise TextError(f"not a readable EPUB: truncated or damaged zip ({exc})") from exc
    except Exception as exc:  # ebooklib raises KeyError, EpubException, lxml errors …
        raise TextError(f"not a readable EPUB ({type(exc).__name__}: {exc})") from exc


def _spine_documents(book: Any) -> Iterator[Any]:
    """The linear XHTML documents of the spine, in reading order (the nav document left out)."""
    import ebooklib
    from ebooklib import epub

    for idref, linear in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT or linear == "no":
            continue
        if isinstance(item, epub.EpubNav) or "nav" in (getattr(item, "properties", None) or []):
            continue
        yield item


def _parse_xhtml(item: Any, notes: Notes) -> Any | None:
    """The parsed document, None when it is empty or unreadable (noted)."""
    from lxml import etree
    from lxml import html as lxml_html

    try:
        content = item.get_content()
        return lxml_html.document_fromstring(content) if content.strip() else None
    except (etree.ParserError, ValueError) as exc:
        notes.add("markup", f"unreadable spine document {item.get_name()} skipped ({exc})")
        return None


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
        paragraphs.append(end_sentence(value) if kind == "heading" else value)
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
