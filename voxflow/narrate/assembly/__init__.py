"""Audiobook assembly: synthesised chunks → mastered, tagged MP3 files (and an M4B).

timeline:   chunk audio + the book's structure → a :class:`FilePlan` per file (pauses, room
            tone, chapters, read-along cues), each streamed chunk by chunk into a WAV on local
            disk (one chunk in memory at a time); chunks.py finds the speech in each chunk.
mastering:  each WAV mastered to the ACX spec and encoded as CBR MP3, the encoded file measured
            again and re-encoded until it passes; on request one M4B of the whole book.
tags:       ID3 tags (mutagen: title, artist = author, album, track, cover, CHAP/CTOC with the
            real chapter titles), the M4B's chapters and the M3U playlist.
render_book (here) runs them and adds the read-along WebVTT.

Every file is built in a work folder and moved into place only when the whole book is done:
a failure never leaves a half-written MP3 (or a half-replaced book) in the output.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from voxflow import scratch
from voxflow.errors import OutputError
from voxflow.io.outputs import OutputTree
from voxflow.models import Cue
from voxflow.narrate.assembly.mastering import MasteringReport, master_m4b, master_mp3, mp3_duration_ms
from voxflow.narrate.assembly.options import AssemblyOptions, BookMeta
from voxflow.narrate.assembly.tags import render_m3u, tag_mp3
from voxflow.narrate.assembly.timeline import (
    ChapterAudio,
    ChapterSpan,
    FilePlan,
    TimelineStats,
    check_read_along,
    plan_files,
    render_timeline,
    render_vtt,
    safe_name,
    shape_chunks,
    timeline_rate,
)

OutputKind = Literal["mp3", "m4b", "vtt", "m3u", "extra"]


@dataclass(frozen=True)
class RenderedFile:
    rel: str  # path under the output tree
    uri: str
    title: str
    duration_ms: int
    chapters: tuple[ChapterSpan, ...]
    mastering: MasteringReport | None
    fmt: OutputKind = "mp3"


@dataclass(frozen=True)
class Audiobook:
    """What :func:`render_book` wrote."""

    folder: str  # rel folder of the book
    files: tuple[RenderedFile, ...]  # MP3 files in playing order
    extras: tuple[RenderedFile, ...] = ()  # playlist, read-along, M4B, report …
    plans: tuple[FilePlan, ...] = ()

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(f.uri for f in (*self.files, *self.extras))

    @property
    def mastering_passed(self) -> bool:
        return all(f.mastering is None or f.mastering.passed for f in self.files)


@contextlib.contextmanager
def work_folder(out: OutputTree, key: str) -> Iterator[Path]:
    """A scratch folder on the output's file system (so finished files are renamed, not
    copied, into place); removed afterwards."""
    if out.local:
        base = out.state_dir() / "work"
        base.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"{key[:12]}-", dir=base))
    else:
        path = Path(tempfile.mkdtemp(prefix="voxflow-book-", dir=os.environ.get("VOXFLOW_TMP_DIR")))
    scratch.claim(path)  # a later run removes it if this process dies before the end
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def render_book(
    book: Sequence[ChapterAudio],
    meta: BookMeta,
    options: AssemblyOptions,
    out: OutputTree,
    folder: str,
    *,
    credits: tuple[ChapterAudio, ChapterAudio] | None = None,
    extra_files: dict[str, bytes] | None = None,
    work_key: str = "book",
) -> Audiobook:
    """Assemble, master, tag and write the whole book under ``folder`` (see module doc)."""
    options.validate()
    rate = timeline_rate(book)
    shapes = shape_chunks([*book, *(credits or ())], rate)
    plans = plan_files(book, meta, options, shapes=shapes, credits=credits)
    book_name = safe_name(meta.book_name)
    with work_folder(out, work_key) as work:
        staged = _Staging(out, folder, work)
        wavs = _render_files(plans, meta, options, staged)
        spoken = [*(credits or ())[:1], *book, *(credits or ())[1:]]
        offset = _stage_read_along(plans, meta, spoken, staged)
        if staged.files:
            entries = [(Path(f.rel).name, f.title, f.duration_ms) for f in staged.files]
            staged.add_text(f"{book_name}.m3u", render_m3u(meta, entries), meta.title, offset, "m3u")
        if "m4b" in options.formats:
            m4b, spans = master_m4b(wavs, meta, options, work)
            staged.add(f"{book_name}.m4b", m4b, meta.title, spans[-1].end_ms if spans else 0, "m4b", spans)
        for name, data in (extra_files or {}).items():
            path = work / f"extra-{len(staged.moves)}"
            path.write_bytes(data)
            staged.add(name, path, name, 0, "extra")
        staged.move_into_place()
    return Audiobook(folder, tuple(staged.files), tuple(staged.extras), tuple(plans))


class _Staging:
    """The book's files as they are built in the work folder, moved into place together."""

    def __init__(self, out: OutputTree, folder: str, work: Path) -> None:
        self.out, self.folder, self.work = out, folder, work
        self.moves: list[tuple[str, Path]] = []  # (rel, local file), in the order they were built
        self.files: list[RenderedFile] = []  # the MP3s
        self.extras: list[RenderedFile] = []

    def add_mp3(self, name: str, path: Path, title: str, spans: Sequence[ChapterSpan], report: MasteringReport) -> None:
        rel = f"{self.folder}/{name}"
        self.moves.append((rel, path))
        self.files.append(RenderedFile(rel, self.out.uri(rel), title, mp3_duration_ms(str(path)), tuple(spans), report))

    def add(
        self,
        name: str,
        path: Path,
        title: str,
        duration_ms: int,
        fmt: OutputKind,
        spans: Sequence[ChapterSpan] = (),
    ) -> None:
        rel = f"{self.folder}/{name}"
        self.moves.append((rel, path))
        self.extras.append(RenderedFile(rel, self.out.uri(rel), title, duration_ms, tuple(spans), None, fmt))

    def add_text(self, name: str, text: str, title: str, duration_ms: int, fmt: OutputKind) -> None:
        rel = f"{self.folder}/{name}"
        path = self.work / (hashlib.sha256(rel.encode()).hexdigest()[:16] + Path(rel).suffix)
        path.write_text(text, encoding="utf-8")
        self.add(name, path, title, duration_ms, fmt)

    def move_into_place(self) -> None:
        """The whole book is ready: every file renamed (or uploaded) to its place."""
        for rel, path in self.moves:
            try:
                self.out.put_file(rel, str(path))
            except OSError as exc:
                raise OutputError(f"cannot write {self.out.uri(rel)}: {exc}") from exc


def _render_files(
    plans: Sequence[FilePlan], meta: BookMeta, options: AssemblyOptions, staged: _Staging
) -> list[tuple[FilePlan, Path, TimelineStats]]:
    """Each plan's WAV, and (unless only an M4B is wanted) its mastered, tagged MP3; the WAVs
    are kept only for the M4B."""
    wavs: list[tuple[FilePlan, Path, TimelineStats]] = []
    for plan in plans:
        wav = staged.work / f"{plan.number:04d}.wav"
        stats = render_timeline(plan, str(wav))
        wavs.append((plan, wav, stats))
        if "mp3" in options.formats:
            mp3 = staged.work / f"{plan.number:04d}.mp3"
            report = master_mp3(str(wav), str(mp3), stats, options, name=plan.name + ".mp3")
            spans = plan.chapters()
            tag_mp3(str(mp3), plan, meta, total=len(plans), chapters=spans)
            staged.add_mp3(f"{plan.name}.mp3", mp3, plan.title, spans, report)
        if "m4b" not in options.formats:
            wav.unlink(missing_ok=True)
    return wavs


def _stage_read_along(
    plans: Sequence[FilePlan], meta: BookMeta, spoken: Sequence[ChapterAudio], staged: _Staging
) -> int:
    """The book's read-along VTT (checked against every chunk's text) and one per chapter or
    part MP3; the book's duration in ms."""
    book_name = safe_name(meta.book_name)
    durations = [f.duration_ms for f in staged.files] or [p.duration_ms for p in plans]
    cues: list[Cue] = []
    offset = 0
    for plan, duration in zip(plans, durations, strict=True):
        cues += [replace(c, start_ms=c.start_ms + offset, end_ms=c.end_ms + offset) for c in plan.cues()]
        if plan.name != book_name and staged.files:  # each chapter/part MP3 gets its own VTT too
            staged.add_text(f"{plan.name}.vtt", render_vtt(plan.cues(), duration), plan.title, duration, "vtt")
        offset += duration
    book_vtt = render_vtt(cues, offset)
    check_read_along(book_vtt, spoken)
    staged.add_text(f"{book_name}.vtt", book_vtt, meta.title, offset, "vtt")
    return offset


__all__ = ["Audiobook", "RenderedFile", "render_book", "work_folder"]
