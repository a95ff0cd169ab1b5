"""The embedded Whisper models live in one child process of their own, the engine process.

Why: the models and their inference (≈ 150–350 MB) then never share a process with Prefect,
the flow and the planning (≈ 250 MB), so no process of a run needs the sum; the engine
process imports only faster-whisper and NumPy and keeps one allocator arena (glibc
``M_ARENA_MAX`` 1; measured on ``local/auto``, 28 s pieces: peak 417–439 MB instead of
471–477 MB at the same speed; returning freed memory at once, ``M_TRIM_THRESHOLD`` 0, gave
373 MB but 38 % slower inference); and a crash inside CTranslate2 fails one call, not the run.

How: a :class:`~concurrent.futures.ProcessPoolExecutor` of one process, started by
``spawn`` (a fresh interpreter: no inherited threads or locks) with SIGINT and SIGTERM
blocked, so Ctrl-C is the parent's to handle — what is in flight finishes, as in-process. It
exits with its parent however the parent ends (it watches the parent's sentinel: ``kill -9``
included). Calls run one at a time, as inference did on its one dedicated thread before.
Dask's worker processes are daemonic and may not have children: there, and wherever a child
cannot be started (no working ``sem_open``, e.g. no /dev/shm), the models run on one
dedicated thread of the process itself.

Shared state: ``_executor`` (one per process) is created and replaced under ``_lock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from voxflow.errors import EngineError

T = TypeVar("T")
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
M_ARENA_MAX = -8  # glibc mallopt(3)
ATTEMPTS = 2  # a call is tried in at most this many engine processes
# An engine process killed mid-call leaves its queue's semaphores to multiprocessing's resource
# tracker, which frees them and says so on stderr at exit ("leaked semaphore objects"): noise.
QUIET_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"
DIED = "the embedded engine's process ended unexpectedly, twice (killed, or out of memory?)"

_lock = threading.Lock()
_executor: Executor | None = None


def call(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in the engine process (started on first use), waited for. A call whose
    engine process dies (killed, out of memory) is tried once more in a new one."""
    for _ in range(ATTEMPTS):
        executor = _current()
        try:
            return executor.submit(fn, *args).result()
        except BrokenProcessPool:
            _forget(executor)
    raise EngineError(DIED)


def start(fn: Callable[..., object], *args: object) -> None:
    """Queue ``fn(*args)`` in the engine process without waiting for it (a warm-up: what it
    raises, the next :func:`call` of the same work raises again)."""
    with contextlib.suppress(BrokenProcessPool):
        _current().submit(fn, *args)


async def call_async(fn: Callable[..., T], *args: object) -> T:
    """:func:`call` for a coroutine."""
    for _ in range(ATTEMPTS):
        executor = _current()
        try:
            return await asyncio.wrap_future(executor.submit(fn, *args))
        except BrokenProcessPool:
            _forget(executor)
    raise EngineError(DIED)


def _current() -> Executor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = _start()
        return _executor


def _forget(executor: Executor) -> None:
    """Drop a broken engine process: the next call starts a new one."""
    global _executor
    with _lock:
        if _executor is executor:
            _executor = None
    executor.shutdown(wait=False, cancel_futures=True)


def _start() -> Executor:
    if multiprocessing.current_process().daemon:  # a Dask worker: no children allowed
        return _in_this_process()
    if QUIET_TRACKER not in sys.warnoptions:  # passed on to the processes spawn starts
        sys.warnoptions.append(QUIET_TRACKER)
    try:
        context = multiprocessing.get_context("spawn")
        executor = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_prepare_engine_process)
        with _stop_signals_blocked():  # the mask is inherited: the child never sees Ctrl-C
            executor.submit(os.getpid)  # starts the process now, from this thread
    except (OSError, ImportError, NotImplementedError):  # no working sem_open (/dev/shm) here
        return _in_this_process()
    return executor


def _in_this_process() -> Executor:
    """Where no child process can be had: the models on one dedicated thread of this process."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")


@contextlib.contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _prepare_engine_process() -> None:
    """In the engine process, before its first call."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    _one_allocator_arena()
    threading.Thread(target=_exit_with_parent, name="voxflow-parent-watch", daemon=True).start()


def _one_allocator_arena() -> None:
    """Before any thread starts: every thread allocates from the one arena."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the allocator's defaults
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 1)


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)
