"""Reading a document: bytes → :class:`Document`, chapters of plain paragraphs.

Plain text is decoded with its detected encoding and cut at heading lines ("Chapter 3",
"CHAPTER III.", "III.") (:mod:`.plain`); Markdown headings are chapters and its markup is
never read aloud (:mod:`.markdown`); EPUB follows the spine, titles come from the table of
contents, and the cover image is kept for the tags (:mod:`.epub`).
"""

from __future__ import annotations

import re
import unicodedata

from voxflow.errors import TextError
from voxflow.narrate.document import Document, DocumentFormat, Notes
from voxflow.narrate.read.common import file_stem
from voxflow.narrate.read.epub import read_epub
from voxflow.narrate.read.markdown import read_markdown
from voxflow.narrate.read.plain import read_plain

TEXT_EXTENSIONS: dict[str, DocumentFormat] = {"txt": "txt", "text": "txt", "md": "md", "markdown": "md", "epub": "epub"}


def document_format(name: str) -> DocumentFormat | None:
    """'txt', 'md' or 'epub' for a file name, None for anything else."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name.rsplit("/", 1)[-1] else ""
    return TEXT_EXTENSIONS.get(ext)


def read_document(uri: str, data: bytes | None = None, *, fmt: DocumentFormat | None = None) -> Document:
    """Read a .txt, .md or .epub document (``data``: its bytes, if already in hand).

    Raises TextError with a message a user can act on: empty, binary, damaged, unreadable.
    """
    from voxflow.io.storage import local_copy, resolve

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
    notes = Notes()
    text, encoding = decode_text(data)
    if encoding not in ("utf-8", "ascii"):
        notes.add("encoding", f"decoded as {encoding} (not UTF-8)")
    stem = file_stem(uri)
    if fmt == "md":
        return read_markdown(uri, text, stem, encoding, notes)
    return read_plain(uri, text, stem, encoding, notes)


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


__all__ = ["TEXT_EXTENSIONS", "decode_text", "document_format", "read_document"]
