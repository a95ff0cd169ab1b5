"""One run per output at a time.

A local output is locked with ``fcntl.flock`` on ``OUT/.voxflow/lock``: the kernel frees it when
the holder dies (even by ``kill -9``), and the file holds the holder's host, pid, run id and start
time as JSON for the message a second run prints. A bucket has no locks, so a run keeps a lease
object ``OUT/.voxflow/lock.json`` (holder + expiry) written with S3 conditional PUTs
(``If-None-Match: *`` to create, ``If-Match: <etag>`` to renew or take over), renewed by a
heartbeat thread; a lease past its expiry (a killed run) is taken over.

A second run either waits (``--wait``) or fails with :class:`OutputLocked` (exit 2) naming the
holder. Shards (``--shard i/n``) each lock their own name: they never share work. The lock is
re-entrant within a process (the CLI takes it, then the flow it starts takes it again).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from voxflow.errors import ConfigError
from voxflow.io.outputs import OutputTree
from voxflow.settings import Settings

log = logging.getLogger("voxflow.lock")
POLL_S = 0.5
_held: dict[str, int] = {}  # lock key → depth, for re-entry within this process
_held_guard = threading.Lock()


class OutputLocked(ConfigError):
    """Another run holds the output (exit code 2)."""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds an output lock, as written into the lock file or lease."""

    host: str
    pid: int
    run_id: str
    since: float
    expires: float | None = None  # leases only
    token: str = ""

    @classmethod
    def me(cls, run_id: str, lease_s: float | None = None) -> Holder:
        now = time.time()
        expires = now + lease_s if lease_s else None
        return cls(socket.gethostname(), os.getpid(), run_id, now, expires, uuid.uuid4().hex)

    @classmethod
    def parse(cls, data: bytes) -> Holder | None:
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError):
            return None

    def dump(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    def renewed(self, lease_s: float) -> Holder:
        return Holder(self.host, self.pid, self.run_id, self.since, time.time() + lease_s, self.token)

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.since, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"host {self.host}, pid {self.pid}, run {self.run_id}, since {since}"


def lock_name(settings: Settings) -> str:
    """``lock`` for a whole run; ``lock-s0of3`` for one shard of a scaled-out run."""
    return "lock" + (f"-s{settings.shard.replace('/', 'of')}" if settings.shard else "")


@contextmanager
def output_lock(settings: Settings, run_id: str, *, sleep: Callable[[float], None] = time.sleep) -> Iterator[None]:
    """Hold ``settings.out``'s lock for the block: wait for it (``settings.wait``) or raise
    :class:`OutputLocked` naming the holder."""
    out = OutputTree(settings.out)
    key = f"{out.uri('.voxflow')}/{lock_name(settings)}"
    with _held_guard:
        depth = _held.get(key, 0)
        _held[key] = depth + 1
    try:
        if depth:
            yield
            return
        lock = _FileLock(out, settings) if out.local else _Lease(out, settings)
        lock.acquire(run_id, sleep)
        try:
            yield
        finally:
            lock.release()
    finally:
        with _held_guard:
            _held[key] -= 1
            if not _held[key]:
                del _held[key]


def _busy(out: OutputTree, holder: Holder | None) -> OutputLocked:
    who = holder.describe() if holder else "a run whose details are not readable yet"
    return OutputLocked(
        f"{out.url} is in use by another voxflow run ({who}); "
        "wait for it with --wait (VOXFLOW_WAIT=1), or use another --out"
    )


def _say_waiting(out: OutputTree, holder: Holder | None) -> None:
    who = holder.describe() if holder else "another run"
    log.warning("waiting for %s: in use by %s", out.url, who)


HOLDER_READS = 40  # × 25 ms: how long a just-taken lock may stay nameless
HOLDER_READ_PAUSE_S = 0.025


class _FileLock:
    """``flock`` on a local file; freed by the kernel when the holder's process ends."""

    def __init__(self, out: OutputTree, settings: Settings) -> None:
        self.out, self.settings = out, settings
        self.path = Path(out.root) / ".voxflow" / lock_name(settings)
        self.fd: int | None = None

    def acquire(self, run_id: str, sleep: Callable[[float], None]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._take(fd)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, Holder.me(run_id).dump(), 0)
        self.fd = fd

    def _take(self, fd: int) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = self._holder()
        if not self.settings.wait:
            raise _busy(self.out, holder)
        _say_waiting(self.out, holder)
        fcntl.flock(fd, fcntl.LOCK_EX)

    def _holder(self) -> Holder | None:
        """Who holds the lock. It writes its name just after taking the lock, so a file still
        empty is read again for a moment (CI met the gap: "in use by another run", no pid)."""
        for _ in range(HOLDER_READS):
            holder = Holder.parse(self.path.read_bytes())
            if holder is not None:
                return holder
            time.sleep(HOLDER_READ_PAUSE_S)
        return None

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class _Lease:
    """A lease object in a bucket, created and renewed with conditional PUTs."""

    def __init__(self, out: OutputTree, settings: Settings) -> None:
        self.out, self.settings = out, settings
        self.lease_s = settings.lock_lease_s
        self.path = out.path(f".voxflow/{lock_name(settings)}.json")
        self.holder: Holder | None = None
        self.etag = ""
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self, run_id: str, sleep: Callable[[float], None]) -> None:
        said = False
        while True:
            current, etag = self._read()
            if self._try(run_id, current, etag):
                break
            if not self.settings.wait:
                raise _busy(self.out, current)
            if not said:
                _say_waiting(self.out, current)
                said = True
            sleep(POLL_S)
        self._beat = threading.Thread(target=self._heartbeat, name="voxflow-lease", daemon=True)
        self._beat.start()

    def _read(self) -> tuple[Holder | None, str]:
        try:
            etag = self.out.fs.info(self.path)["ETag"]
            return Holder.parse(self.out.fs.cat_file(self.path)), etag
        except FileNotFoundError:
            return None, ""

    def _try(self, run_id: str, current: Holder | None, etag: str) -> bool:
        """Create the lease, or take over an expired (or unreadable) one; False if held."""
        if current is not None and (current.expires or 0) > time.time():
            return False
        mine = Holder.me(run_id, self.lease_s)
        condition: dict[str, Any] = {"IfMatch": etag} if etag else {"mode": "create"}
        if not self._put(mine, condition):
            return False
        if current is not None:
            log.warning("took over the expired lease of %s on %s", current.describe(), self.out.url)
        self.holder = mine
        return True

    def _put(self, holder: Holder, condition: dict[str, Any]) -> bool:
        try:
            reply = self.out.fs.pipe_file(self.path, holder.dump(), **condition)
        except OSError:
            return False  # 412: someone else wrote the lease first (or the store is unreachable)
        self.etag = (reply or {}).get("ETag") or self.out.fs.info(self.path)["ETag"]
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            assert self.holder is not None
            renewed = self.holder.renewed(self.lease_s)
            if self._put(renewed, {"IfMatch": self.etag}):
                self.holder = renewed
            else:
                log.error("lost the lease on %s: another run took it over", self.out.url)
                return

    def release(self) -> None:
        self._stop.set()
        if self._beat:
            self._beat.join()
        _, etag = self._read()
        if etag and etag == self.etag:
            self.out.fs.rm_file(self.path)


__all__ = ["Holder", "OutputLocked", "lock_name", "output_lock"]
