"""What the CLI shows while a transcription runs, fed by :mod:`voxflow.progress` events.

A transcription's progress is counted in **audio seconds** across the batch (a 10-minute file moves the bar chunk
by chunk), with files done, cost, the current file and an ETA. Without a terminal (cron,
systemd, a pipe) it prints one line per finished file instead; ``quiet`` prints neither. A
narration's is counted in chunks to speak, with the current book and chapter.

Events arrive from the run's task threads at once, so the tally takes a lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Self

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from voxflow.fsnames import one_line


@dataclass
class AudioTally:
    """Audio seconds done and expected, from ``probed``, ``chunk`` and ``finished`` events."""

    files_total: int
    files_done: int = 0
    cost_usd: float = 0.0
    current: str = ""
    _probed_ms: dict[str, int] = field(default_factory=dict)  # recording → duration
    _done_ms: dict[str, int] = field(default_factory=dict)  # recording → audio transcribed so far
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, event: str, data: dict[str, Any]) -> None:
        with self._lock:
            if event == "probed":
                self._probed_ms[data["recording"]] = data["duration_ms"]
                self.current = data["recording"]
            elif event == "chunk":
                rec = data["recording"]
                self._done_ms[rec] = self._done_ms.get(rec, 0) + data["duration_ms"]
            elif event == "finished":
                result = data["result"]
                rec = result.recording.rel_path
                self._probed_ms[rec] = self._done_ms[rec] = result.duration_ms  # silence and restores too
                self.files_done += 1
                self.cost_usd += result.cost_usd

    @property
    def done_s(self) -> float:
        return sum(self._done_ms.values()) / 1000

    @property
    def total_s(self) -> float | None:
        """Audio of the whole batch: what was probed, plus the mean for files not probed yet
        (None until the first file is probed)."""
        known = [ms for ms in self._probed_ms.values() if ms > 0]
        if not known:
            return None
        unknown = max(self.files_total - len(self._probed_ms), 0)
        return (sum(self._probed_ms.values()) + unknown * sum(known) / len(known)) / 1000


def batch_bar(verb: str, counts: str, console: Console, *, shown: bool) -> Progress:
    """A run's rich bar: ``verb ━━━ counts · $cost ETA current`` (``counts`` names task fields)."""
    return Progress(
        TextColumn(f"[bold]{verb}"),
        BarColumn(),
        TextColumn(counts + " · ${task.fields[cost]:.4f}"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[current]}"),
        console=console,
        transient=False,
        disable=not shown,
    )


class _Shown:
    """A context manager that shows ``self.bar`` for as long as the block runs."""

    bar: Progress

    def __enter__(self) -> Self:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


class RunProgress(_Shown):
    """A rich bar on a terminal, one line per finished file elsewhere, nothing when quiet."""

    def __init__(self, total_files: int, console: Console, *, quiet: bool = False, force_bar: bool = False) -> None:
        self.tally = AudioTally(total_files)
        self.console = console
        self.quiet = quiet
        self.bar = batch_bar("transcribing", "{task.fields[audio]} · {task.fields[files]} files", console,
                             shown=not quiet and (console.is_terminal or force_bar))  # fmt: skip
        self.task = self.bar.add_task("audio", total=None, audio="", files="", cost=0.0, current="")

    def on_event(self, event: str, data: dict[str, Any]) -> None:
        self.tally.on_event(event, data)
        tally = self.tally
        total = tally.total_s
        self.bar.update(
            self.task,
            completed=tally.done_s,
            total=total,
            audio=f"{hms(tally.done_s)} of {hms(total) if total is not None else '?'} audio",
            files=f"{tally.files_done}/{tally.files_total}",
            cost=tally.cost_usd,
            current=one_line(tally.current)[-40:],
        )
        if event == "finished":
            self._say_finished(data["result"])

    def _say_finished(self, result: Any) -> None:
        name = one_line(result.recording.rel_path)
        if result.status == "failed":
            self.bar.console.print(one_line(f"failed {result.error_message}"), markup=False, highlight=False)
        elif self.bar.disable and not self.quiet:
            self.console.print(
                f"done {name} ({hms(result.duration_ms / 1000)} audio; "
                f"{self.tally.files_done}/{self.tally.files_total} files)",
                markup=False,
                highlight=False,
            )


@dataclass
class ChunkTally:
    """A narration batch's chunks to speak and spoken (cached chunks are not counted), books
    done, cost and the current book and chapter, from ``narration.*`` events."""

    books_total: int
    books_done: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    cost_usd: float = 0.0
    current: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_event(self, event: str, data: dict[str, Any]) -> None:
        with self._lock:
            if event == "narration.started":
                self.current = data["document"]
            elif event == "narration.chunks":
                self.chunks_total += data["to_speak"]
            elif event == "narration.chunk":
                self.chunks_done += 1
                self.cost_usd += data.get("cost_usd") or 0.0
                chapter = data.get("chapter")
                self.current = f"{data['document']} — {chapter}" if chapter else data["document"]
            elif event == "narration.finished":
                self.books_done += 1


class NarrationProgress(_Shown):
    """A rich bar over a narration's chunks on a terminal (nothing elsewhere: the per-book
    lines say enough), fed by ``narration.*`` events from the run's threads."""

    def __init__(self, total_books: int, console: Console, *, force_bar: bool = False) -> None:
        self.tally = ChunkTally(total_books)
        self.bar = batch_bar("narrating", "{task.fields[chunks]} chunks · {task.fields[books]} books", console,
                             shown=console.is_terminal or force_bar)  # fmt: skip
        self.task = self.bar.add_task("chunks", total=None, chunks="", books="", cost=0.0, current="")

    def on_event(self, event: str, data: dict[str, Any]) -> None:
        self.tally.on_event(event, data)
        tally = self.tally
        self.bar.update(
            self.task,
            completed=tally.chunks_done,
            total=tally.chunks_total or None,
            chunks=f"{tally.chunks_done}/{tally.chunks_total}",
            books=f"{tally.books_done}/{tally.books_total}",
            cost=tally.cost_usd,
            current=one_line(tally.current)[-48:],
        )


def plural(count: int, noun: str) -> str:
    """``1 recording``, ``2 recordings``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
