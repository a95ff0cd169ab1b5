"""Listing, reading and writing local paths and buckets, all through fsspec.

A source is a local directory or file, or any fsspec URL (``s3://bucket/prefix``,
``file:///…``). Outputs go through :class:`OutputTree`, which writes every file under a
temporary name and renames it into place (object stores: one PUT, which is atomic).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from voxflow.errors import OutputError, SourceError
from voxflow.media import looks_like_media
from voxflow.models import Recording

HASH_BLOCK = 1 << 20
# Extensions that are never media: not even sniffed.
NOT_MEDIA = frozenset(
    [
        "txt",
        "md",
        "json",
        "srt",
        "vtt",
        "ass",
        "ssa",
        "sub",
        "parquet",
        "csv",
        "tsv",
        "pdf",
        "doc",
        "docx",
        "epub",
        "html",
        "htm",
        "xml",
        "yml",
        "yaml",
        "jpg",
        "jpeg",
        "png",
        "gif",
        "webp",
        "bmp",
        "tif",
        "tiff",
        "svg",
        "py",
        "sh",
        "log",
        "zip",
        "gz",
        "tar",
        "nfo",
        "db",
        "sqlite",
        "lock",
        "m3u",
    ]
)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def resolve(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) for a local path or fsspec URL; local paths become absolute."""
    if "://" not in url:
        url = str(Path(url).expanduser().resolve())
    try:
        return url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise SourceError(f"cannot open {url}: {exc}") from exc


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI a user can paste back: a plain path locally, ``proto://path`` otherwise."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _inside(path: str, folder: str | None) -> bool:
    return bool(folder) and (path == folder or path.startswith(folder.rstrip("/") + "/"))


@dataclass(frozen=True, slots=True)
class ScanResult:
    recordings: tuple[Recording, ...]
    ignored: int  # files that are not media (or hidden, or inside the output folder)


def scan(source: str, *, exclude: str | None = None, settle_seconds: float = 0.0) -> ScanResult:
    """Media files under ``source`` (a directory, recursively, or one file), sorted by path.

    Hidden files and folders and anything under ``exclude`` (the output folder) are skipped.
    Media is recognised by extension or, for unknown extensions, by the first bytes.
    """
    fs, root = resolve(source)
    excluded = resolve(exclude)[1] if exclude else None
    try:
        if not fs.exists(root):
            raise SourceError(f"source does not exist: {source}")
        if fs.isfile(root):
            entries = {root: fs.info(root)}
            base = root.rsplit("/", 1)[0]
        else:
            entries = fs.find(root, detail=True, withdirs=False)
            base = root.rstrip("/")
    except (OSError, PermissionError) as exc:
        raise SourceError(f"cannot list {source}: {exc}") from exc
    recordings, ignored = [], 0
    for path, info in sorted(entries.items()):
        rel = path[len(base) :].lstrip("/")
        if _hidden(rel) or _inside(path, excluded) or not _is_media(fs, path, rel):
            ignored += 1
            continue
        recordings.append(
            Recording(
                uri=full_uri(fs, path),
                rel_path=rel,
                size_bytes=int(info.get("size") or 0),
                mtime=_mtime(info),
            )
        )
    return ScanResult(tuple(recordings), ignored)


def _is_media(fs: fsspec.AbstractFileSystem, path: str, rel: str) -> bool:
    ext = rel.rsplit(".", 1)[-1].lower() if "." in rel.rsplit("/", 1)[-1] else ""
    if ext in NOT_MEDIA:
        return False
    if looks_like_media(rel, b""):
        return True
    try:
        with fs.open(path, "rb") as fh:
            return looks_like_media(rel, fh.read(16))
    except OSError:
        return False


def _mtime(info: dict[str, Any]) -> float:
    value = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or 0
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def content_hash(uri: str) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    fs, path = resolve(uri)
    digest = hashlib.sha256()
    try:
        with fs.open(path, "rb") as fh:
            while block := fh.read(HASH_BLOCK):
                digest.update(block)
    except PermissionError as exc:
        raise SourceError(f"cannot read {uri}: permission denied") from exc
    except OSError as exc:
        raise SourceError(f"cannot read {uri}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


class HashCache:
    """Remembers (uri, size, mtime) → content hash, so unchanged files are not re-read."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, list[Any]] = {}
        self._dirty = False
        if path and path.exists():
            with contextlib.suppress(ValueError, OSError):
                self._entries = json.loads(path.read_text())

    def hashed(self, rec: Recording) -> Recording:
        """``rec`` with its recording_id, from the cache when size and mtime still match."""
        known = self._entries.get(rec.uri)
        if known and known[0] == rec.size_bytes and known[1] == rec.mtime:
            return replace(rec, recording_id=known[2])
        digest = content_hash(rec.uri)
        self._entries[rec.uri] = [rec.size_bytes, rec.mtime, digest]
        self._dirty = True
        return replace(rec, recording_id=digest)

    def save(self) -> None:
        if self.path and self._dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_local_atomic(self.path, json.dumps(self._entries).encode())
            self._dirty = False


@contextlib.contextmanager
def local_copy(uri: str, suffix: str = "") -> Iterator[str]:
    """A local path for ``uri``: the file itself, or a temp download streamed to disk."""
    fs, path = resolve(uri)
    if is_local(fs):
        yield path
        return
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="voxflow-src-")
    os.close(fd)
    try:
        fs.get_file(path, tmp)
        yield tmp
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_local_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc


class OutputTree:
    """A folder (local or bucket) that receives outputs, written atomically."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = resolve(url)
        self.local = is_local(self.fs)

    def path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}"

    def uri(self, rel: str) -> str:
        return full_uri(self.fs, self.path(rel))

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write ``rel`` atomically; returns its URI."""
        target = self.path(rel)
        if self.local:
            write_local_atomic(Path(target), data)
        else:
            try:
                self.fs.pipe_file(target, data)
            except OSError as exc:
                raise OutputError(f"cannot write {self.uri(rel)}: {exc}") from exc
        return self.uri(rel)

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode("utf-8"))

    def put_file(self, rel: str, local_path: str) -> str:
        """Move or upload a finished local file to ``rel`` (rename locally)."""
        target = self.path(rel)
        if self.local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            os.replace(local_path, target)
        else:
            self.fs.put_file(local_path, target)
        return self.uri(rel)

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.path(rel)))

    def read_text(self, rel: str) -> str:
        with self.fs.open(self.path(rel), "r", encoding="utf-8") as fh:
            return fh.read()

    def glob(self, pattern: str) -> list[str]:
        return sorted(self.fs.glob(self.path(pattern)))

    def state_dir(self) -> Path:
        """A local folder for caches and checkpoints of this output tree."""
        if self.local:
            return Path(self.root) / ".voxflow"
        key = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return Path(os.environ.get("VOXFLOW_STATE_DIR", Path.home() / ".cache/voxflow")) / key


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
