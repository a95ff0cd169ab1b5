"""What the tasks of one run share within one process, built where the tasks run.

A task gets its run as a serialisable spec (run id, settings without secrets); the engine,
HTTP clients and limits it needs are per process: built by the first task a process runs for
the run and reused by the others (threads of the planning process, or a Dask worker's).
This is a cache, not a registry: a process that never saw the run builds from the spec.

Thread safety: ``get`` builds under the cache's lock, so two threads of a process never build
twice (the second waits for the first's engine); entries are dropped under the same lock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from voxflow import interrupts
from voxflow.fsnames import printable_tree
from voxflow.io.outputs import OutputTree

R = TypeVar("R")


class PerProcess(Generic[R]):
    """The resources of the last ``keep`` runs this process worked for, by run id."""

    def __init__(self, on_drop: Callable[[R], None] = lambda _r: None, keep: int = 2) -> None:
        self._built: dict[str, R] = {}
        self._lock = threading.Lock()
        self._on_drop = on_drop
        self._keep = keep  # a long-lived Dask worker serves run after run

    def get(self, run_id: str, build: Callable[[], R]) -> R:
        with self._lock:
            if run_id not in self._built:
                self._put(run_id, build())
            return self._built[run_id]

    def put(self, run_id: str, resources: R) -> None:
        with self._lock:
            self._put(run_id, resources)

    def drop(self, run_id: str) -> None:
        with self._lock:
            dropped = self._built.pop(run_id, None)
        if dropped is not None:
            self._on_drop(dropped)

    def _put(self, run_id: str, resources: R) -> None:
        self._built[run_id] = resources
        while len(self._built) > self._keep:
            self._on_drop(self._built.pop(next(iter(self._built))))


def exit_code(*, aborted: bool, failed: bool) -> int:
    """A finished run's exit code: 130 interrupted, 3 aborted, 1 some items failed, else 0."""
    if interrupts.requested():
        return interrupts.INTERRUPTED_EXIT
    return 3 if aborted else (1 if failed else 0)


def write_manifest(out: OutputTree, run_id: str, manifest: Mapping[str, Any]) -> str:
    """``runs/<run_id>.json`` (names that are not UTF-8 escaped); its URI."""
    return out.write_text(f"runs/{run_id}.json", json.dumps(printable_tree(dict(manifest)), indent=2, default=str))


__all__ = ["PerProcess", "exit_code", "write_manifest"]
