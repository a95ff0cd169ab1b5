"""Which output files voxflow wrote, so it never overwrites a file it did not write.

Every sidecar voxflow writes is recorded as a *claim* (path, recording, source, sha256 of the
bytes written) in the catalog table ``outputs`` (flushed with the run's other rows) and, until
that flush, in a local journal (``<state dir>/outputs-pending/<writer>-<run_id>.jsonl``) written
before the file itself: a crash between the two leaves a claim, never an orphan that the next run
would take for the user's. The next run holding the output lock folds dead journals into the
catalog. Catalogs from before the ledger fall back to the ``outputs`` of ``done`` rows (no hash).

A path is in one of four states for a recording:
- ``free``: no file there (write it);
- ``mine``: voxflow wrote it for this recording (or for an earlier content of the same source
  file) and it still has the bytes voxflow wrote (may be rewritten);
- ``foreign``: a file voxflow did not write, or one a person changed since: left alone unless
  ``--overwrite``;
- ``taken``: voxflow wrote it for another recording: this recording uses another name.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from voxflow.fsnames import printable_name
from voxflow.io.catalog import CatalogIndex, read_table
from voxflow.io.outputs import OutputTree

PathState = Literal["free", "mine", "foreign", "taken"]


@dataclass(frozen=True, slots=True)
class Claim:
    """voxflow wrote ``path`` (a URI) for a recording; ``sha256`` None for a pre-ledger claim."""

    path: str
    recording_id: str
    source_uri: str
    sha256: str | None
    run_id: str
    written_at: float

    def row(self) -> dict[str, object]:
        return {**asdict(self), "written_at": datetime.fromtimestamp(self.written_at, tz=UTC)}


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class OutputLedger:
    """The latest claim per output path, plus the claims this run makes."""

    def __init__(self, claims: dict[str, Claim] | None = None, journal_dir: Path | None = None, root: str = "") -> None:
        self.claims = claims or {}
        self.journal_dir = journal_dir
        self.root = root  # the output tree's URI, as text: paths under it are kept relative
        self.dead_journals: list[Path] = []
        self._guard = threading.Lock()

    @classmethod
    def load(cls, out: OutputTree, index: CatalogIndex, writer: str = "w0") -> OutputLedger:
        """Claims from pre-ledger ``done`` rows, then the ``outputs`` table, then journals (this
        writer's journals are from dead runs: the output lock lets one run per writer live)."""
        ledger = cls(journal_dir=out.state_dir() / "outputs-pending", root=printable_name(out.uri("").rstrip("/")))
        claims: dict[str, Claim] = {}
        for done in index.done.values():  # oldest first: the latest row listing a path wins
            for path in done.outputs:
                claims[ledger.key(path)] = Claim(path, done.recording_id, done.source_uri, None, done.run_id, 0.0)
        rows = read_table(out, "outputs").to_pylist()
        journaled = ledger._journal_claims(writer)
        for claim in sorted([*map(_claim_from_row, rows), *journaled], key=lambda c: c.written_at):
            claims[ledger.key(claim.path)] = claim
        ledger.claims = claims
        return ledger

    def key(self, path: str) -> str:
        """How the ledger names ``path``: as text (names that are not UTF-8 escaped, as the
        catalog stores them), relative to the output tree when under it (so a moved or copied
        output folder still knows its own files)."""
        text = printable_name(path)
        prefix = self.root + "/"
        return text[len(prefix) :] if self.root and text.startswith(prefix) else text

    def _journal_claims(self, writer: str) -> list[Claim]:
        if self.journal_dir is None or not self.journal_dir.is_dir():
            return []
        found = []
        for journal in sorted(self.journal_dir.glob("*.jsonl")):
            if journal.name.startswith(f"{writer}-"):
                self.dead_journals.append(journal)
            for line in journal.read_text(encoding="utf-8").splitlines():
                try:
                    found.append(Claim(**json.loads(line)))
                except (ValueError, TypeError):
                    continue  # a line cut by a crash: its file was never written
        return found

    def state(self, path: str, recording_id: str, source_uri: str, read: Callable[[], bytes | None]) -> PathState:
        """What ``path`` is to this recording; ``read`` gives its bytes (None: no file)."""
        claim = self.claims.get(self.key(path))
        same_source = claim is not None and printable_name(claim.source_uri) == printable_name(source_uri)
        if claim is not None and claim.recording_id != recording_id and not same_source:
            return "taken"
        content = read()
        if content is None:
            return "free"
        if claim is None or (claim.sha256 is not None and claim.sha256 != sha256_of(content)):
            return "foreign"
        return "mine"

    def journal(self, claims: Iterable[Claim], writer: str, run_id: str) -> None:
        """Record claims before their files are written (fsynced; local state dir)."""
        claims = list(claims)
        with self._guard:
            for claim in claims:
                self.claims[self.key(claim.path)] = claim
            if self.journal_dir is None:
                return
            self.journal_dir.mkdir(parents=True, exist_ok=True)
            with open(self.journal_dir / _journal_name(writer, run_id), "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(asdict(c)) + "\n" for c in claims))
                fh.flush()
                os.fsync(fh.fileno())

    def adopt_dead_journals(self) -> list[dict[str, object]]:
        """Catalog rows for the claims of earlier runs that died before their flush."""
        rows = []
        for journal in self.dead_journals:
            for line in journal.read_text(encoding="utf-8").splitlines():
                try:
                    rows.append(Claim(**json.loads(line)).row())
                except (ValueError, TypeError):
                    continue
        return rows

    def drop_journals(self, writer: str, run_id: str) -> None:
        """After the catalog has this run's (and the adopted) claims."""
        for journal in self.dead_journals:
            journal.unlink(missing_ok=True)
        if self.journal_dir is not None:
            for journal in self.journal_dir.glob(f"{writer}-{run_id}-*.jsonl"):  # one per process of the run
                journal.unlink(missing_ok=True)


def _journal_name(writer: str, run_id: str) -> str:
    """One journal per process of a run (a run's tasks may run in several processes, on
    several hosts: appends to a shared file are not atomic on every file system)."""
    return f"{writer}-{run_id}-{socket.gethostname()}-{os.getpid()}.jsonl"


def _claim_from_row(row: dict) -> Claim:
    when = row["written_at"]
    return Claim(
        row["path"],
        row["recording_id"],
        row["source_uri"],
        row["sha256"],
        row["run_id"],
        when.timestamp() if when else time.time(),
    )


__all__ = ["Claim", "OutputLedger", "PathState", "sha256_of"]
