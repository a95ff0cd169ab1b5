"""Stopping a run cleanly (Ctrl-C, SIGTERM from systemd or cron).

The first SIGINT or SIGTERM asks the run to stop: no new recording, document or chunk is
started, what is in flight finishes or leaves its checkpoints, the catalog is flushed, the
manifest says ``"interrupted": true`` and the command exits 130. A second signal exits at
once (130); whatever it leaves behind, the next run sweeps (:mod:`voxflow.scratch`).

The work runs in a worker thread while the main thread waits: Python delivers signals to the
main thread only, so the handlers stay prompt, and Prefect (which swaps in its own SIGTERM
handler when a flow starts on the main thread) leaves them alone.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from voxflow.errors import ExitCode

INTERRUPTED_EXIT = int(ExitCode.INTERRUPTED)  # 130
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
SAME_PRESS_S = 0.3  # a second signal sooner than this is a copy of the first (uv forwards Ctrl-C)
_stop = threading.Event()
T = TypeVar("T")


class Interrupted(Exception):
    """Work not started because the run was asked to stop (never a catalog row)."""


_wakeup: list[int] = []  # read end of the signal wake-up pipe while graceful_signals is active


def requested() -> bool:
    """True once the run has been asked to stop starting new work — already when the signal
    has arrived but its Python handler has not run yet (Ctrl-C reaches ffmpeg at the same
    moment: its failure must not be taken for a broken file)."""
    return _stop.is_set() or (bool(_wakeup) and bool(select.select(_wakeup[:1], [], [], 0)[0]))


def request() -> None:
    _stop.set()


@contextlib.contextmanager
def graceful_signals(on_first: Callable[[str], None]) -> Iterator[None]:
    """Within the block, the first stop signal calls ``on_first(name)`` and sets
    :func:`requested`; a second one exits the process at once with status 130. Once a stop
    was asked, that holds after the block too (while the process reports and exits: a late
    second signal used to meet Python's default handler, a KeyboardInterrupt, exit -2)."""

    first_at: list[float] = []

    def handle(signum: int, _frame: object) -> None:
        if _stop.is_set() and first_at and time.monotonic() - first_at[0] < SAME_PRESS_S:
            return  # the same press again: the terminal's group and `uv run` both deliver it
        if _stop.is_set():
            sys.stderr.write("\nstopped at once; the next run cleans up and resumes\n")
            sys.stderr.flush()
            os._exit(INTERRUPTED_EXIT)
        _stop.set()
        first_at.append(time.monotonic())
        on_first(signal.Signals(signum).name)

    _stop.clear()
    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield
        return
    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)  # written at the C level, at once
    _wakeup[:] = [read_end]
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        _wakeup.clear()
        os.close(read_end)
        os.close(write_end)
        if not _stop.is_set():
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_in_worker(work: Callable[[], T]) -> T:
    """Run ``work`` in a thread while the main thread waits for it (signals stay prompt)."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed back to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="voxflow-run", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.2)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
