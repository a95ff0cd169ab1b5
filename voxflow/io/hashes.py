"""Content hashes (the recording id) and the cache that skips rehashing unchanged files
(keyed by size + mtime or ETag, stored in the output tree)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from voxflow.errors import AudioError, SourceError, VoxflowError
from voxflow.io.outputs import OutputTree
from voxflow.io.sources import check_media_head
from voxflow.io.storage import (
    REMOTE_BLOCK,
    full_uri,
    is_local,
    open_input,
    open_regular,
    read_error,
    resolve,
    write_local_atomic,
)
from voxflow.models import Recording

HASH_BLOCK = 1 << 20


def content_hash(uri: str, size: int | None = None, *, media: bool = False) -> str:
    """sha256 of a file's bytes, streamed in blocks (1 MiB locally, 8 MiB from a bucket).

    An object whose listed ``size`` fits in one block is fetched with a single GET (no HEAD).
    Only regular files are read (SourceError otherwise). With ``media``, the first block is
    checked before the rest is read (:func:`check_media_head`): a file that is not audio or
    video raises AudioError instead of being read end to end.
    """
    fs, path = resolve(uri) if "://" in uri else (None, uri)
    if fs is None or is_local(fs):
        with open_regular(path, uri) as fh:
            return _digest(fh, HASH_BLOCK, uri, path if media else None)
    if size is not None and size <= REMOTE_BLOCK:
        try:
            data = fs.cat_file(path)
        except OSError as exc:
            raise read_error(uri, exc) from exc
        if media:
            check_media_head(data[:HASH_BLOCK], None)
        return hashlib.sha256(data).hexdigest()
    with open_input(uri, cache_type="none") as fh:  # one GET per block, nothing kept
        return _digest(fh, REMOTE_BLOCK, uri, "" if media else None)


def _digest(fh: BinaryIO, block: int, uri: str, media_path: str | None) -> str:
    """sha256 of ``fh``; when ``media_path`` is not None ("" for a remote object), the first
    block must pass :func:`check_media_head` before another byte is read."""
    digest = hashlib.sha256()
    try:
        chunk = fh.read(block)
        if media_path is not None:
            check_media_head(chunk, media_path or None)
        while chunk:
            digest.update(chunk)
            chunk = fh.read(block)
    except OSError as exc:
        raise read_error(uri, exc) from exc
    return digest.hexdigest()


class HashCache:
    """Remembers uri → (size, version, content hash), so unchanged files are not re-read.

    The version is the file's mtime on file systems and its ETag on buckets. ``HashCache(path)``
    keeps one local JSON file; :meth:`in_tree` keeps one file per writer inside the output
    tree (``.voxflow/hashes/<source>-<writer>.json``, in the bucket for bucket outputs) and
    reads every writer's file, so a fresh machine or container, or another shard, starts warm.
    Saving keeps only the files seen in this run, and writes nothing when nothing changed.
    With ``media``, a file that is not audio or video raises AudioError before it is read
    end to end (see :func:`content_hash`).
    """

    def __init__(self, path: Path | None = None, *, media: bool = False) -> None:
        self.path = path
        self.media = media
        self._tree: OutputTree | None = None
        self._rel = ""
        self._entries: dict[str, list[Any]] = {}
        self._own: dict[str, list[Any]] = {}
        self._seen: dict[str, list[Any]] = {}
        self._prefetched: dict[str, str | VoxflowError] = {}  # digest, or why it cannot be read
        self.hashed_count = 0  # files actually read by this instance
        if path and path.exists():
            with contextlib.suppress(ValueError, OSError):
                self._own = _entries(json.loads(path.read_text()))
                self._entries = dict(self._own)

    @classmethod
    def in_tree(cls, out: OutputTree, source: str, writer: str = "w0", *, media: bool = False) -> HashCache:
        """The cache of ``source``'s files, stored in ``out`` (see the class doc)."""
        fs, root = resolve(source)
        key = hashlib.sha256(os.fsencode(full_uri(fs, root))).hexdigest()[:12]
        cache = cls(None, media=media)
        cache._tree = out
        cache._rel = f".voxflow/hashes/{key}-{writer}.json"
        own_path = out.path(cache._rel)
        for path in out.glob(f".voxflow/hashes/{key}-*.json"):
            try:
                with out.fs.open(path, "rb") as fh:
                    loaded = _entries(json.loads(fh.read()))
            except (OSError, ValueError):
                continue
            if path == own_path:
                cache._own = loaded
            else:
                cache._entries.update(loaded)
        cache._entries.update(cache._own)
        return cache

    def hashed(self, rec: Recording, version: Any = None) -> Recording:
        """``rec`` with its recording_id, from the cache when size and version still match
        (``version`` defaults to the recording's mtime)."""
        version = rec.mtime if version is None else version
        known = self._entries.get(rec.uri)
        if known and known[0] == rec.size_bytes and known[1] == version:
            self._seen[rec.uri] = known
            return replace(rec, recording_id=known[2])
        digest = self._prefetched.pop(rec.uri, None) or content_hash(rec.uri, rec.size_bytes, media=self.media)
        if isinstance(digest, VoxflowError):
            raise digest
        self.hashed_count += 1
        entry = [rec.size_bytes, version, digest]
        self._entries[rec.uri] = self._seen[rec.uri] = entry
        return replace(rec, recording_id=digest)

    def prefetch(self, recordings: Iterable[Recording], versions: dict[str, Any], workers: int = 8) -> int:
        """Hash, ``workers`` at a time, the recordings the cache cannot answer (a bucket's GETs
        overlap instead of queueing); :meth:`hashed` then takes the results. Files that cannot
        be read are reported by :meth:`hashed`. Returns how many were hashed."""
        todo = []
        for rec in recordings:
            version = versions.get(rec.uri, rec.mtime)
            known = self._entries.get(rec.uri)
            if not (known and known[0] == rec.size_bytes and known[1] == version):
                todo.append(rec)
        if len(todo) < 2:
            return 0

        def one(rec: Recording) -> tuple[str, str | VoxflowError]:
            try:
                return rec.uri, content_hash(rec.uri, rec.size_bytes, media=self.media)
            except (SourceError, AudioError) as exc:
                return rec.uri, exc

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voxflow-hash") as pool:
            self._prefetched.update(pool.map(one, todo))
        return sum(isinstance(v, str) for v in self._prefetched.values())

    def known(self, uri: str) -> str | None:
        """The last known content hash of ``uri`` (whatever its version), or None."""
        entry = self._entries.get(uri)
        return entry[2] if entry else None

    def save(self) -> None:
        """Write this writer's entries (the files seen in this run) if they changed."""
        if self._seen == self._own:
            return
        data = json.dumps(self._seen, separators=(",", ":")).encode()
        if self._tree is not None:
            self._tree.write_bytes(self._rel, data)
        elif self.path:
            write_local_atomic(self.path, data)
        else:
            return
        self._own = dict(self._seen)


def _entries(data: Any) -> dict[str, list[Any]]:
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 3 and isinstance(v[2], str)}
