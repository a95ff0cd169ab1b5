"""The output tree: catalog, runs, audiobooks and voxflow's state folder, local or a bucket,
written atomically."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from functools import lru_cache
from pathlib import Path

from voxflow.errors import output_error
from voxflow.io.sources import find_paths
from voxflow.io.storage import full_uri, is_local, resolve, write_local_atomic


class OutputTree:
    """A folder (local or bucket) that receives outputs, written atomically.

    Locally: a temp file in the same folder, renamed into place. On a bucket: one PUT (or one
    multipart upload, completed at the end), which readers see whole or not at all.
    """

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
                raise output_error(self.uri(rel), exc) from exc
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
            try:
                self.fs.put_file(local_path, target)
            except OSError as exc:
                raise output_error(self.uri(rel), exc) from exc
        return self.uri(rel)

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.path(rel)))

    def read_text(self, rel: str) -> str:
        with self.fs.open(self.path(rel), "r", encoding="utf-8") as fh:
            return fh.read()

    def glob(self, pattern: str) -> list[str]:
        return sorted(self.fs.glob(self.path(pattern)))

    def find(self, rel: str = "") -> set[str]:
        """Every file path under ``rel`` (the whole tree by default), listed once."""
        return find_paths(self.fs, self.path(rel).rstrip("/") if rel else self.root)

    @classmethod
    def cached(cls, url: str) -> OutputTree:
        """The same as ``OutputTree(url)``, memoised (per working directory): planning asks
        for the sidecar tree of every recording."""
        return _cached_tree(url, os.getcwd() if "://" not in url else "")

    def state_dir(self) -> Path:
        """A local folder for caches and checkpoints of this output tree."""
        if self.local:
            return Path(self.root) / ".voxflow"
        key = hashlib.sha256(os.fsencode(self.url)).hexdigest()[:16]
        return Path(os.environ.get("VOXFLOW_STATE_DIR", Path.home() / ".cache/voxflow")) / key


@lru_cache(maxsize=4096)
def _cached_tree(url: str, cwd: str) -> OutputTree:
    return OutputTree(url)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]
