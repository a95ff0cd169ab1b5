"""The output tree as the review site reads it: a relative path is served only when it is a regular
file inside OUT, reached without symlinks, ``..``, absolute or hidden parts."""

from __future__ import annotations

import os
from pathlib import Path

from voxflow.fsnames import printable_name


def safe_file(root: Path, rel: str) -> Path | None:
    """``root/rel`` when it is a regular file inside ``root`` reached without symlinks, ``..``,
    absolute parts or hidden names; else None."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel:
        return None
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    base = root.resolve()
    path = base.joinpath(*parts)
    try:
        if path.resolve(strict=True) != path or not path.is_file():
            return None
    except (OSError, RuntimeError):
        return None
    for parent in [path, *path.parents]:
        if parent == base:
            return path
        if parent.is_symlink():
            return None
    return None


def real_rel(root: Path, rel: str) -> str:
    """``rel`` with each part written by :func:`printable_name` (``caf\\xe9.vtt``) replaced by the one
    entry of its folder inside ``root`` that prints so; unchanged when there is none (or several)."""
    if "\\" not in rel:
        return rel
    folder, parts = root, []
    for part in rel.split("/"):
        if part in ("", ".", "..") or part.startswith(".") or folder.is_symlink():
            return rel  # safe_file refuses it: never list a folder outside root
        if "\\" in part:
            try:
                names = [n for n in os.listdir(folder) if n != part and printable_name(n) == part]
            except OSError:
                return rel
            if len(names) != 1:
                return rel
            part = names[0]
        parts.append(part)
        folder = folder / part
    return "/".join(parts)


def out_rel(root: Path, uri: str) -> str | None:
    """The path of output ``uri`` relative to ``root``, if it lies inside it."""
    try:
        return Path(uri.removeprefix("file://")).resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return None


def servable(root: Path, rel: str) -> Path | None:
    """:func:`safe_file`, outside the catalog folder: the files the site links and serves."""
    path = safe_file(root, rel)
    return None if path is None or path.relative_to(root).parts[0] == "catalog" else path
