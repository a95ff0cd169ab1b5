"""The embedded Whisper models live in child processes of their own, the engine processes.

Why: the models and their inference (≈ 150–350 MB) then never share a process with Prefect,
the flow and the planning (≈ 250 MB), so no process of a run needs the sum; the engine
process imports only faster-whisper and NumPy and tunes glibc's allocator (one arena,
``M_ARENA_MAX`` 1: on ``local/auto``, 28 s pieces, peak 417–439 MB instead of 471–477 MB at the
same speed; and a fixed ``M_MMAP_THRESHOLD`` of 16 MB, so large buffers are given back to the
system when freed instead of fragmenting the heap: on 20 minutes of continuous speech
(``bench_memory.py --continuous``) peak 425 MB instead of 457 MB with two engine processes,
449 instead of 487 with one, for 4–6 % more time; 4 MB saved more, 395 / 425 MB, for 5–15 %;
returning all freed memory at once, ``M_TRIM_THRESHOLD`` 0, 38 % slower inference); and a
crash inside CTranslate2 fails one call, not the run.

How: a :class:`~concurrent.futures.ProcessPoolExecutor` of ``processes`` engine processes
(two by default: see :class:`voxflow.engines.local.LocalTranscriber`), started by ``spawn``
(a fresh interpreter: no inherited threads or locks) with SIGINT and SIGTERM blocked, so
Ctrl-C is the parent's to handle — what is in flight finishes, as in-process. Each exits with
its parent however the parent ends (it watches the parent's sentinel: ``kill -9`` included).
Each runs one call at a time. Dask's worker processes are daemonic and may not have children:
there, and wherever a child cannot be started (no working ``sem_open``, e.g. no /dev/shm),
the models run on one dedicated thread of the process itself.

Shared state: ``_executor`` and ``_size`` (one pool per process) are created and replaced
under ``_lock``; a call asking for another number of processes replaces the pool (the old
one's calls in flight finish first).
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
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool, _ExecutorManagerThread
from typing import TypeVar

from voxflow.errors import EngineError

T = TypeVar("T")
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
M_ARENA_MAX = -8  # glibc mallopt(3) parameters
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 16 * 2**20  # buffers this large or larger are mapped, and unmapped when freed
ATTEMPTS = 2  # a call is tried in at most this many engine processes
STOP_WAIT_S = 5.0  # stop(): how long the pool's manager thread gets to tear the pool down
# An engine process killed mid-call leaves its queue's semaphores to multiprocessing's resource
# tracker, which frees them and says so on stderr at exit ("leaked semaphore objects"): noise.
QUIET_TRACKER = "ignore::UserWarning:multiprocessing.resource_tracker"
DIED = "the embedded engine's process ended unexpectedly, twice (killed, or out of memory?)"

_lock = threading.Lock()
_executor: Executor | None = None
_size = 0  # engine processes of _executor


def call(fn: Callable[..., T], *args: object, processes: int = 1) -> T:
    """``fn(*args)`` in an engine process of a pool of ``processes`` (started on first use),
    waited for. A call whose engine process dies (killed, out of memory) is tried once more in
    a new pool."""
    for _ in range(ATTEMPTS):
        executor = _current(processes)
        try:
            return executor.submit(fn, *args).result()
        except BrokenProcessPool:
            _forget(executor)
    raise EngineError(DIED)


def start(fn: Callable[..., object], *args: object, processes: int = 1) -> None:
    """Queue ``fn(*args)`` once per engine process without waiting (a warm-up: each process
    is started, and most often each runs one of them; what it raises, the next :func:`call`
    of the same work raises again)."""
    with contextlib.suppress(BrokenProcessPool):
        executor = _current(processes)
        for _ in range(processes):
            executor.submit(fn, *args)


async def call_async(fn: Callable[..., T], *args: object, processes: int = 1) -> T:
    """:func:`call` for a coroutine. Cancelling the coroutine leaves the call to the pool (it
    runs, or :func:`stop` drops it): Python 3.11's teardown of a broken pool stops at the first
    call cancelled from outside (InvalidStateError, fixed in 3.12), leaving the calls after it
    unanswered and the interpreter's exit waiting for ever."""
    for _ in range(ATTEMPTS):
        executor = _current(processes)
        try:
            return await asyncio.shield(_answer(executor.submit(fn, *args)))
        except BrokenProcessPool:
            _forget(executor)
    raise EngineError(DIED)


def _answer(future: Future[T]) -> asyncio.Future[T]:
    """``future`` for asyncio; its outcome is read even when nobody awaits it any more."""
    answer = asyncio.wrap_future(future)
    answer.add_done_callback(lambda done: done.cancelled() or done.exception())
    return answer


def stop() -> None:
    """End the engine processes now, at the end of a command: queued calls are dropped and the
    processes killed (they only compute; nothing of theirs is worth waiting for), so the
    interpreter's exit does not wait for a model load or a piece in flight."""
    global _executor
    with _lock:
        executor, _executor = _executor, None
    if executor is None:
        return
    manager = getattr(executor, "_executor_manager_thread", None)
    _end(executor)
    if manager is not None:  # it sees the kills, tears the pool down and closes its wake-up pipe; until
        manager.join(STOP_WAIT_S)  # then, Python 3.11's exit handler could write to that pipe as it closed (EBADF)


def _current(processes: int) -> Executor:
    global _executor, _size
    with _lock:
        if _executor is not None and _size != processes:
            _executor.shutdown(wait=False)  # its calls in flight finish, then its processes exit
            _executor = None
        if _executor is None:
            _executor, _size = _start(processes), processes
        return _executor


def _forget(executor: Executor) -> None:
    """Drop a broken pool (an engine process died): the next call starts a new one."""
    global _executor
    with _lock:
        if _executor is executor:
            _executor = None
    _end(executor)


def _end(executor: Executor) -> None:
    """Kill the pool's processes and drop its queued calls. Killed, not terminated: an engine
    process ignores SIGTERM, so the pool's own teardown of a broken pool (SIGTERM, then join)
    would wait for ever for one still alive, and Python's exit waits for that teardown."""
    for child in list((getattr(executor, "_processes", None) or {}).values()):  # 3.14: terminate_workers
        child.kill()
    call_queue = getattr(executor, "_call_queue", None)
    if call_queue is not None:  # its feeder may be blocked writing a piece nobody will read: never wait for it
        call_queue.cancel_join_thread()
    executor.shutdown(wait=False, cancel_futures=True)


TEARDOWN_RACE = "dictionary changed size during iteration"


def _quiet_teardown_race() -> None:
    """Python 3.11's manager thread of a broken pool counts the pool's processes while a call
    submitted at that moment adds one (terminate_broken marks the pool broken outside its lock):
    its RuntimeError was printed as a thread traceback under the run's one-line failures. The
    pool is dropped and its processes killed by voxflow anyway (``_forget``), so that one error
    of that one thread is not printed; every other thread error still is."""
    if getattr(threading.excepthook, "voxflow_quiet", False):
        return
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        manager = isinstance(args.thread, _ExecutorManagerThread)
        if manager and args.exc_type is RuntimeError and TEARDOWN_RACE in str(args.exc_value):
            return
        previous(args)

    hook.voxflow_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def may_have_children() -> bool:
    """False in a daemonic process (a Dask worker): there the models run on a thread of it."""
    return not multiprocessing.current_process().daemon


def _start(processes: int) -> Executor:
    if not may_have_children():
        return _in_this_process()
    _quiet_teardown_race()
    if QUIET_TRACKER not in sys.warnoptions:  # passed on to the processes spawn starts
        sys.warnoptions.append(QUIET_TRACKER)
    try:
        context = multiprocessing.get_context("spawn")
        executor = ProcessPoolExecutor(processes, mp_context=context, initializer=_prepare_engine_process)
        with _stop_signals_blocked():  # the mask is inherited: the children never see Ctrl-C
            for _ in range(processes):  # each submit finding no idle process starts one, now, from this thread
                with contextlib.suppress(BrokenProcessPool):  # one killed already: the caller's submit finds out
                    executor.submit(os.getpid)
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
    _tune_allocator()
    threading.Thread(target=_exit_with_parent, name="voxflow-parent-watch", daemon=True).start()


def _tune_allocator() -> None:
    """Before any thread starts: every thread allocates from the one arena, and large buffers
    go back to the system when freed (a fixed threshold: glibc's own rises with every large
    free, after which such buffers stay in the heap and fragment it)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the allocator's defaults
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, 1)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)
