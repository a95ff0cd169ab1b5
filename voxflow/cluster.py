"""Where a task runs, and the limits that hold across the processes of a Dask cluster.

A task of voxflow may run in the process that planned the run (threads), or in a worker
process of a ``dask.distributed`` cluster (``--cluster``). This module answers "where am I"
(the ``worker`` column of the catalog) and gives the OpenRouter request limit a cluster-wide
form: a ``distributed.Semaphore`` named after the run, so N workers together never have more
than ``--concurrency`` requests in flight. ``distributed`` is imported only inside a worker.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from voxflow.limits import RequestLimiter

_LOCAL = re.compile(r"local:(\d+)")
_ADDRESS = re.compile(r"(tcp|tls|inproc)://[^\s/]+(:\d+)?")


def check_cluster(value: str) -> str:
    """``value`` as a cluster address (``tcp://HOST:PORT``) or ``local:N``; ValueError otherwise."""
    value = value.strip()
    if (m := _LOCAL.fullmatch(value)) and 1 <= int(m.group(1)) <= 256:
        return value
    if _ADDRESS.fullmatch(value):
        return value
    raise ValueError("must be tcp://HOST:PORT (a running Dask scheduler) or local:N (N worker processes, 1-256)")


def local_workers(cluster: str) -> int | None:
    """N of ``local:N``; None for the address of an existing scheduler."""
    m = _LOCAL.fullmatch(cluster)
    return int(m.group(1)) if m else None


def dask_worker() -> Any | None:
    """The Dask worker this code runs in, or None (not inside a worker)."""
    if "distributed" not in __import__("sys").modules:
        return None
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:
        return None


def where_am_i() -> str:
    """The ``worker`` column: the Dask worker's address, or host:pid outside a cluster."""
    worker = dask_worker()
    return worker.address if worker is not None else f"{socket.gethostname()}:{os.getpid()}"


class ClusterLimiter(RequestLimiter):
    """A RequestLimiter (429 pauses, adaptive limit: per process) whose slots are also leases of
    a ``distributed.Semaphore`` shared by every worker of the run (the cluster-wide cap).

    The semaphore's calls block, so they run in a thread. A wait cancelled while its thread is
    still asking (a TaskGroup cancelling the siblings of a failed chunk) hands the lease back as
    soon as the thread gets it: the worker refreshes every lease it holds, so a lease nobody
    releases would be held for good. A killed worker's leases are freed by the scheduler once
    they time out (``distributed.scheduler.locks.lease-timeout``)."""

    def __init__(self, limit: int, name: str) -> None:
        super().__init__(limit)
        from distributed import Semaphore

        self._semaphore = Semaphore(max_leases=limit, name=name)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with super().slot():
            request = _LeaseRequest(self._semaphore)
            try:
                await asyncio.to_thread(request.wait)
            except BaseException:
                request.abandon()
                raise
            try:
                yield
            finally:
                await asyncio.to_thread(self._semaphore.release)


class _LeaseRequest:
    """One lease asked for in a thread, by a coroutine that may give up on it (thread-safe:
    ``granted`` and ``abandoned`` change under ``_lock``; whoever comes second releases)."""

    def __init__(self, semaphore: Any) -> None:
        self._semaphore = semaphore
        self._lock = threading.Lock()
        self._granted = self._abandoned = False

    def wait(self) -> None:
        """In a thread: block until the lease is granted (released again if given up meanwhile)."""
        granted = self._semaphore.acquire()
        with self._lock:
            self._granted = bool(granted)
            release = self._granted and self._abandoned
        if release:
            self._semaphore.release()

    def abandon(self) -> None:
        """The coroutine gave up: a lease already granted is released (off the event loop)."""
        with self._lock:
            self._abandoned = True
            release = self._granted
        if release:
            threading.Thread(target=self._semaphore.release, name="voxflow-lease-release", daemon=True).start()


def request_limiter(limit: int, run_id: str, *, remote: bool) -> RequestLimiter:
    """The request limiter of one process of a run: cluster-wide inside a Dask worker for a
    remote engine, else this process's own (the embedded engines send no requests)."""
    if remote and dask_worker() is not None:
        return ClusterLimiter(limit, f"voxflow-requests-{run_id}")
    return RequestLimiter(limit)


__all__ = ["ClusterLimiter", "check_cluster", "dask_worker", "local_workers", "request_limiter", "where_am_i"]
