"""File names that are not valid UTF-8 (old NAS shares: ``b'bad\\xff\\xfe.txt'``), kept
losslessly. Python hands such a name over with surrogate escapes (``'bad\\udcff\\udcfe.txt'``),
which open the file fine but crash anything that encodes it (hashing, JSON, Parquet, ID3 tags,
the console). Text shown or stored uses :func:`printable_name` (``'bad\\\\xff\\\\xfe.txt'``); where
the exact name matters (Parquet) :func:`raw_name` keeps the bytes beside it."""

from __future__ import annotations

from typing import Any


def raw_name(name: str) -> bytes:
    """The bytes the file system holds for ``name`` (undoing Python's surrogate escapes)."""
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate outside the escape range: keep it as-is
        return name.encode("utf-8", "surrogatepass")


def printable_name(name: str) -> str:
    """``name`` as valid text: each byte that is not UTF-8 written ``\\xNN`` (backslashreplace)."""
    return raw_name(name).decode("utf-8", "backslashreplace")


def one_line(text: str) -> str:
    """``text`` for one terminal line: a name's newlines, tabs and other control characters
    written as escapes (``\\n``), so a file name cannot break or fake a line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in printable_name(text))


def printable_tree(value: Any) -> Any:
    """:func:`printable_name` on every string inside dicts, lists and tuples (manifests, rows)."""
    if isinstance(value, str):
        return printable_name(value)
    if isinstance(value, dict):
        return {printable_tree(k): printable_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable_tree(v) for v in value]
    return value


__all__ = ["printable_name", "printable_tree", "raw_name"]
