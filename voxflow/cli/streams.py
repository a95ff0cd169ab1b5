"""The CLI's stdout and stderr, made safe for what they meet: a reader that goes away
(``voxflow transcribe … 2>&1 | head -1``) and file names that are not UTF-8.

A closed pipe never stops a run: from the first write that finds its reader gone, that stream
points at ``/dev/null`` (Python's documented recipe for SIGPIPE, without dying on it) and the
run goes on to the end, so its work is whole and its exit code (0, 1, 2, 3, 130) is the run's,
not 141 or 1 for the log reader's leaving. Every text written passes through
:func:`~voxflow.fsnames.printable_name`, so a name with a raw ``0xff`` byte reads ``\\xff`` as
in the catalog, never ``\\udcff``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from voxflow.fsnames import printable_name


class QuietWhenClosed:
    """``stream`` that writes printable text and goes quiet once its reader has gone."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            self._stream.write(printable_name(text))
        except BrokenPipeError:
            self._silence()
        return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._silence()

    def _silence(self) -> None:
        """``/dev/null`` over the stream's file descriptor: what is buffered and all that
        follows (the flush at exit too) is dropped without an error."""
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, …: the stream's own
        return getattr(self._stream, name)


def guard_streams() -> None:
    """Route ``sys.stdout`` and ``sys.stderr`` through :class:`QuietWhenClosed` (once)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, QuietWhenClosed):
            setattr(sys, name, QuietWhenClosed(stream))
