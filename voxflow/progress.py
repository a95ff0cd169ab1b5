"""A tiny in-process event hook so a front end (the CLI's progress bar) can follow a run.

The core and the Prefect tasks call :func:`emit`; nobody listening costs nothing. A worker
process run by a deployment has no listener, and Prefect's UI shows progress there instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Listener = Callable[[str, dict[str, Any]], None]
_listeners: list[Listener] = []
_lock = threading.Lock()


def subscribe(listener: Listener) -> Callable[[], None]:
    """Call ``listener(event, data)`` for every event; returns an unsubscribe function."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def emit(event: str, **data: Any) -> None:
    for listener in list(_listeners):
        listener(event, data)
