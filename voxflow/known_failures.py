"""Recordings that failed for a permanent reason and have not changed since: not retried
every night (``--retry-failed`` tries them again)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from voxflow.errors import VoxflowError, kind_is_permanent
from voxflow.io.catalog import read_table
from voxflow.io.outputs import OutputTree
from voxflow.models import Recording

_COLUMNS = ["recording_id", "source_uri", "size_bytes", "options_hash", "status", "error_kind", "error_message"]
_COLUMNS += ["run_id", "finished_at"]


@dataclass(frozen=True)
class KnownFailure:
    """The catalog's latest word on a recording: failed, permanently, in run ``since_run``."""

    file: str
    kind: str
    message: str
    since_run: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class KnownFailures:
    """Permanent failures with one set of options: by content hash (files that were read), and
    by source URI for files refused before hashing (matched on size and modification time)."""

    by_content: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_uri: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, out: OutputTree, options_hash: str) -> KnownFailures:
        never = datetime.min.replace(tzinfo=UTC)
        rows = read_table(out, "transcripts", _COLUMNS).to_pylist()
        known = cls()
        for row in sorted(rows, key=lambda r: r["finished_at"] or never):  # the latest row wins
            if row["options_hash"] != options_hash:
                continue
            if row["recording_id"]:
                known.by_content[row["recording_id"]] = row
            else:
                known.by_uri[row["source_uri"]] = row
        return known

    def hashed(self, rec: Recording) -> KnownFailure | None:
        """The known failure of this content, if its latest outcome was a permanent failure."""
        return _known(rec, self.by_content.get(rec.recording_id))

    def refused(self, rec: Recording, exc: BaseException) -> KnownFailure | None:
        """The known failure of a file refused before hashing, if it failed the same permanent
        way last time and its size and modification time say it has not changed since."""
        row = self.by_uri.get(rec.uri)
        if not isinstance(exc, VoxflowError) or row is None or row["error_kind"] != exc.kind:
            return None
        failed_at = row["finished_at"].timestamp() if row["finished_at"] else 0.0
        if row["size_bytes"] != rec.size_bytes or _changed_since(rec, failed_at):
            return None
        return _known(rec, row)


def _changed_since(rec: Recording, when: float) -> bool:
    """Modified after ``when``; for a local file, its inode too (a chmod that makes it readable)."""
    if rec.mtime > when:
        return True
    if "://" in rec.uri and not rec.uri.startswith("file://"):
        return False
    try:
        return os.stat(rec.uri.removeprefix("file://")).st_ctime > when
    except OSError:
        return False


def _known(rec: Recording, row: dict[str, Any] | None) -> KnownFailure | None:
    if row is None or row["status"] != "failed" or not kind_is_permanent(row["error_kind"]):
        return None
    return KnownFailure(rec.rel_path, row["error_kind"], row["error_message"] or "", row["run_id"])
