"""What every reader needs: a title from the file name, the declared language, and the
:class:`Document` of a txt or Markdown file."""

from __future__ import annotations

import re

from voxflow.fsnames import printable_name
from voxflow.models import language_code
from voxflow.narrate.document import Chapter, Document, DocumentFormat, Notes
from voxflow.narrate.words import capitalise


def file_stem(uri: str) -> str:
    """The file name without its extension ('books/alice.txt' → 'alice')."""
    name = printable_name(uri.rstrip("/").rsplit("/", 1)[-1])
    return name.rsplit(".", 1)[0] if "." in name else name


def pretty_title(stem: str) -> str:
    """'the_red-headed_league' → 'The Red-Headed League' (a title from a file name)."""
    words = re.sub(r"[_]+|\s+", " ", stem).strip().split(" ")
    return " ".join(capitalise(w) for w in words if w) or "Untitled"


def document_language(value: str | None) -> str | None:
    """A document's declared language as ISO-639-1 (models.language_code), None if unknown."""
    code = language_code(value)
    return None if code == "und" else code


def text_document(
    uri: str,
    fmt: DocumentFormat,
    title: str,
    meta: dict[str, str],
    chapters: list[Chapter],
    encoding: str,
    notes: Notes,
) -> Document:
    """A txt or Markdown document: author and language from its header or front matter."""
    return Document(
        uri=uri,
        format=fmt,
        title=title,
        author=meta.get("author"),
        chapters=tuple(chapters),
        language=document_language(meta.get("language")),
        encoding=encoding,
        notes=tuple(notes.items),
    )
