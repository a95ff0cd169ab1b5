"""The documents of a narration run: scanning the corpus (.txt, .md, .epub), each book's key
(its output folder), and the lexicon files that apply to it."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxflow.fsnames import printable_name
from voxflow.io.sources import list_source
from voxflow.io.storage import resolve
from voxflow.narrate.assembly.timeline import safe_name
from voxflow.narrate.options import NarrationOptions
from voxflow.narrate.read import document_format

# A corpus folder's own documentation is not a book.
_NOT_BOOKS = re.compile(r"^(readme|licen[cs]e|changelog|contributing|notice|copying)(\.|$)", re.IGNORECASE)


COVER_NAMES = ("cover.jpg", "cover.jpeg", "cover.png")


@dataclass(frozen=True, slots=True)
class DocumentRef:
    """One document found by a scan."""

    uri: str
    rel_path: str
    size_bytes: int = 0
    mtime: float = 0.0

    @property
    def format(self) -> str | None:
        return document_format(self.rel_path)

    @property
    def display_path(self) -> str:
        """``rel_path`` as valid UTF-8 (bytes that are not UTF-8 escaped): for logs and names."""
        return printable_name(self.rel_path)

    @property
    def stem(self) -> str:
        name = self.rel_path.rsplit("/", 1)[-1]
        return name.rsplit(".", 1)[0] if "." in name else name


def scan_documents(
    source: str, *, exclude: str | None = None, follow_symlinks: bool = False
) -> tuple[list[DocumentRef], int]:
    """(.txt/.md/.epub documents under ``source`` sorted by path, files ignored), from the same
    listing as recordings (:func:`voxflow.io.sources.list_source`: regular files only)."""
    listing = list_source(source, exclude=exclude, follow_symlinks=follow_symlinks)
    docs, ignored = [], listing.left_out
    for f in listing.files:
        name = f.rel_path.rsplit("/", 1)[-1]
        if document_format(f.rel_path) is None or ".lexicon." in name or _NOT_BOOKS.match(name):
            ignored += 1
            continue
        docs.append(DocumentRef(f.uri, f.rel_path, f.size_bytes, f.mtime))
    return docs, ignored


def book_keys(docs: Iterable[DocumentRef]) -> dict[str, str]:
    """rel_path → output folder key: the rel path without extension; the extension is kept
    where two documents would share a key (``book.txt`` and ``book.md``)."""
    docs = list(docs)
    plain = {d.rel_path: printable_name(d.rel_path).rsplit(".", 1)[0] for d in docs}
    counts: dict[str, int] = {}
    for key in plain.values():
        counts[key] = counts.get(key, 0) + 1
    return {rel: (key if counts[key] == 1 else f"{key}-{rel.rsplit('.', 1)[-1].lower()}") for rel, key in plain.items()}


def safe_key(key: str) -> str:
    return "/".join(safe_name(part) for part in key.split("/") if part not in ("", ".", ".."))


def lexicon_files(doc_uri: str, options: NarrationOptions) -> list[str]:
    """Global lexicons (``--lexicon``, ``VOXFLOW_LEXICON``), then the book's own beside it:
    ``<stem>.lexicon.toml`` or ``<stem>.lexicon.txt`` (later entries win)."""
    files = [*options.lexicon]
    if env := os.environ.get("VOXFLOW_LEXICON"):
        files += [p for p in env.split(os.pathsep) if p]
    fs, path = resolve(doc_uri)
    stem = path.rsplit(".", 1)[0]
    for suffix in (".lexicon.toml", ".lexicon.txt"):
        candidate = stem + suffix
        with contextlib.suppress(OSError):
            if fs.exists(candidate):
                files.append(candidate if "file" in str(fs.protocol) else _fetch(fs, candidate))
    return files


def _fetch(fs: Any, path: str) -> str:
    """A bucket file copied to a local temp file (lexicons are small)."""
    import tempfile

    fd, tmp = tempfile.mkstemp(suffix=Path(path).suffix or ".txt", prefix="voxflow-lex-")
    os.close(fd)
    fs.get_file(path, tmp)
    return tmp
