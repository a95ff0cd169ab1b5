"""Where no child process can be started (no working sem_open, e.g. a container without
/dev/shm), the engine's calls run on a thread of this process instead of failing the run.
Oracle: the pid the call reports."""

from __future__ import annotations

import os

import pytest

from voxflow.engines import process


def test_without_child_processes_calls_run_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_semaphores(*args: object, **kwargs: object) -> None:
        raise ImportError("This platform lacks a functioning sem_open implementation")

    monkeypatch.setattr(process, "_executor", None)
    monkeypatch.setattr(process, "ProcessPoolExecutor", no_semaphores)
    try:
        assert process.call(os.getpid) == os.getpid()
    finally:
        process._executor.shutdown()  # type: ignore[union-attr]


def test_with_child_processes_calls_run_in_the_engine_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "_executor", None)
    try:
        assert process.call(os.getpid) != os.getpid()
        assert process.call(os.getppid) == os.getpid()  # a child of this process
    finally:
        process._executor.shutdown()  # type: ignore[union-attr]
