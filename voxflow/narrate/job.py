"""One document's narration, wherever its task runs: read → prepare → synthesise → assemble,
master, tag and write the book → one ``narrations`` row per chapter (one failed row on error).
Resuming is by construction: cached chunks are never synthesised again, and a finished book's
state file lets the next run skip it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from voxflow import interrupts, progress
from voxflow.cluster import where_am_i
from voxflow.engines.base import SynthesisOptions, Synthesizer
from voxflow.engines.base import is_local as is_local_model
from voxflow.errors import AudioError, RunAbort, SourceError, VoxflowError
from voxflow.fsnames import printable_name, raw_name
from voxflow.io.hashes import content_hash
from voxflow.io.outputs import OutputTree
from voxflow.io.storage import resolve, write_local_atomic
from voxflow.limits import Budget, RequestLimiter
from voxflow.narrate.assembly import Audiobook, render_book
from voxflow.narrate.assembly.chunks import ChunkAudio
from voxflow.narrate.assembly.options import BookMeta
from voxflow.narrate.assembly.timeline import ChapterAudio, safe_name
from voxflow.narrate.corpus import COVER_NAMES, lexicon_files, safe_key
from voxflow.narrate.document import PreparedDocument, TextChunk
from voxflow.narrate.language import check_language
from voxflow.narrate.lexicon import Lexicon
from voxflow.narrate.options import (
    NARRATION_VERSION,
    NarrationOptions,
    narrator_label,
    synthesis_options,
    voice_is_latin,
)
from voxflow.narrate.prepare import check_chunks, credits_chunks, prepare_document
from voxflow.narrate.read import read_document
from voxflow.narrate.synthesis import ChunkCache, SynthStats, synthesise_chunks
from voxflow.settings import Settings


def utc_now() -> datetime:
    return datetime.now(tz=UTC)


def _job_digest(
    document_id: str,
    sopts: SynthesisOptions,
    options: NarrationOptions,
    lexicon: Lexicon,
    max_chars: int,
    key: str,
) -> str:
    blob = json.dumps(
        {
            "v": NARRATION_VERSION,
            "document": document_id,
            "synthesis": sopts.digest(),
            "assembly": options.assembly().digest(),
            "chunking": [max_chars, options.instructions, options.speed],
            "lexicon": lexicon.digest(),
            "folder": key,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _state_path(out: OutputTree, key: str) -> Path:
    return out.state_dir() / "narrations" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")


def _load_state(out: OutputTree, key: str) -> dict[str, Any] | None:
    path = _state_path(out, key)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class _Job:
    """What a document's skip check computed (reused by the narration itself)."""

    document_id: str
    digest: str
    lexicon: Lexicon
    max_chars: int
    key: str


def make_job(
    doc_uri: str,
    key: str,
    settings: Settings,
    options: NarrationOptions,
    synth_model: str,
    max_input_chars: int,
    document_id: str | None = None,
) -> _Job:
    document_id = document_id or content_hash(doc_uri)
    lexicon = Lexicon.load(lexicon_files(doc_uri, options))
    max_chars = min(max_input_chars, options.max_chunk_chars or max_input_chars)
    sopts = synthesis_options(settings, options, synth_model)
    digest = _job_digest(document_id, sopts, options, lexicon, max_chars, key)
    return _Job(document_id, digest, lexicon, max_chars, key)


def skipped_rows(out: OutputTree, job: _Job, run_id: str, *, force: bool = False) -> list[dict[str, Any]] | None:
    """The rows of an unchanged, finished book (status ``skipped``), or None if it needs work.

    Cheap: one small JSON file and an existence check per output; nothing is synthesised.
    """
    if force:
        return None
    state = _load_state(out, job.key)
    if not state or state.get("job") != job.digest or not state.get("rows"):
        return None
    outputs = state.get("outputs") or []
    try:
        if not all(out.fs.exists(resolve(uri)[1]) for uri in outputs):
            return None
    except (OSError, SourceError):
        return None
    now = utc_now()
    rows = []
    for row in state["rows"]:
        rows.append(
            {
                **row,
                "status": "skipped",
                "run_id": run_id,
                "cost_usd": 0.0,
                "chunks_synthesised": 0,
                "started_at": now,
                "finished_at": now,
                "error_kind": None,
                "error_message": None,
            }
        )
    return rows


def narrate_document(
    doc_uri: str,
    settings: Settings,
    out: OutputTree,
    synth: Synthesizer,
    limiter: RequestLimiter,
    budget: Budget,
    run_id: str,
    *,
    rel_path: str | None = None,
    book_key: str | None = None,
    options: NarrationOptions | None = None,
    force: bool | None = None,
) -> list[dict[str, Any]]:
    """Narrate one document into ``out`` and return its ``narrations`` rows (one per
    chapter; one failed row on error; none when the run was asked to stop before the book
    was written: it is left for the next run, its synthesised chunks cached). Raises only RunAbort."""
    if interrupts.requested():
        return []
    options = options or NarrationOptions()
    raw_rel = rel_path or doc_uri.rstrip("/").rsplit("/", 1)[-1]
    rel = printable_name(raw_rel)
    key = safe_key(book_key or rel.rsplit(".", 1)[0])
    force = settings.force if force is None else force
    started = utc_now()
    progress.emit("narration.started", document=rel)
    spent = SynthStats()
    try:
        rows = _narrate(
            doc_uri, raw_rel, key, settings, out, synth, limiter, budget, run_id, options, force, started, spent
        )
    except RunAbort:
        raise
    except Exception as exc:  # a VoxflowError, a bug or an infrastructure fault: still one clear row
        if isinstance(exc, interrupts.Interrupted) or interrupts.requested():  # e.g. ffmpeg got the Ctrl-C too
            rows = []  # left undone, for the next run
        else:
            rows = [failed_row(doc_uri, raw_rel, synth.model, settings.voice, run_id, exc, started, spent)]
    worker = where_am_i()
    rows = [{**row, "worker": worker} for row in rows]
    progress.emit("narration.finished", document=rel, rows=rows)
    return rows


def _narrate(
    doc_uri: str,
    rel: str,
    key: str,
    settings: Settings,
    out: OutputTree,
    synth: Synthesizer,
    limiter: RequestLimiter,
    budget: Budget,
    run_id: str,
    options: NarrationOptions,
    force: bool,
    started: datetime,
    spent: SynthStats,
) -> list[dict[str, Any]]:
    options.assembly().validate()
    job = make_job(doc_uri, key, settings, options, synth.model, synth.max_input_chars)
    rows = skipped_rows(out, job, run_id, force=force)
    if rows is not None:
        return rows
    sopts = synthesis_options(settings, options, synth.model)
    local = is_local_model(synth.model)
    doc = check_language(read_document(doc_uri), synth.model)
    prepared = prepare_document(
        doc, max_chars=job.max_chars, lexicon=job.lexicon, phonemes=local, latin_only=voice_is_latin(synth.model)
    )
    check_chunks(prepared)
    narrator = narrator_label(synth.model, settings.voice)
    credits = None
    chunks = list(prepared.chunks())
    if options.credits:
        credits = credits_chunks(doc.title, doc.author, narrator, lexicon=job.lexicon, phonemes=local)
        chunks += list(credits)
    cache = ChunkCache(out.state_dir() / "tts-cache")
    label = printable_name(rel)
    titles = {chapter.index: chapter.title for chapter in doc.chapters}
    speaking = synthesise_chunks(chunks, synth, sopts, cache, limiter, budget, label=label, titles=titles, stats=spent)
    audio, stats = asyncio.run(speaking)
    if interrupts.requested():  # every chunk is cached; the book is assembled by the next run
        raise interrupts.Interrupted("the run was asked to stop before this book was assembled")
    digest = sopts.digest()

    def audio_of(chunks: Iterable[TextChunk]) -> tuple[ChunkAudio, ...]:
        return tuple(_chunk_audio(audio, c, digest) for c in chunks)

    book = [ChapterAudio(ch, audio_of(ch.chunks)) for ch in prepared.chapters]
    credit_audio = None
    if credits:
        opening, closing = credits
        credit_audio = tuple(
            ChapterAudio(_credit_chapter(c, label), audio_of([c]))
            for c, label in ((opening, "Opening Credits"), (closing, "Closing Credits"))
        )
    cover, cover_mime = doc.cover, doc.cover_mime
    if cover is None:
        cover, cover_mime = _cover_beside(doc_uri)
    meta = BookMeta(
        title=doc.title,
        author=doc.author,
        narrator=narrator,
        book_name=key.rsplit("/", 1)[-1],
        cover=cover,
        cover_mime=cover_mime,
        language=doc.language,
        comment=f"Narrated by {narrator} with voxflow; meets the ACX audio spec where the "
        "mastering report says so (ACX does not accept synthetic narration without permission).",
    )
    folder = f"audiobooks/{key}"
    rendered = render_book(book, meta, options.assembly(), out, folder, credits=credit_audio, work_key=job.digest)
    report_rel = f"{folder}/{safe_name(meta.book_name)}.report.json"
    report_uri = out.write_text(report_rel, json.dumps(_book_report(doc_uri, prepared, rendered, stats), indent=2))
    outputs = [*rendered.outputs, report_uri]
    rows = _done_rows(
        doc_uri, rel, job, prepared, rendered, stats, synth.model, settings.voice, run_id, started, outputs, digest
    )
    _save_state(out, job, rows, outputs)
    return rows


def _chunk_audio(audio: Mapping[str, ChunkAudio], chunk: TextChunk, digest: str) -> ChunkAudio:
    """Invariant: every chunk has audio (a checked cache entry or fresh speech) with frames."""
    found = audio.get(chunk.cache_key(digest))
    if found is None or found.frames <= 0:
        raise AudioError(f"chapter {chunk.chapter_index + 1}, chunk {chunk.seq}: no speech for {chunk.text[:60]!r}")
    return found


def _credit_chapter(chunk: TextChunk, title: str) -> Any:
    from voxflow.narrate.document import PreparedChapter

    return PreparedChapter(-1, title, (chunk,))


def _cover_beside(doc_uri: str) -> tuple[bytes | None, str | None]:
    """A cover image next to a .txt/.md: ``<stem>.jpg|png`` or ``cover.jpg|png``."""
    fs, path = resolve(doc_uri)
    stem = path.rsplit(".", 1)[0]
    folder = path.rsplit("/", 1)[0]
    candidates = [f"{stem}.jpg", f"{stem}.jpeg", f"{stem}.png", *(f"{folder}/{n}" for n in COVER_NAMES)]
    for candidate in candidates:
        with contextlib.suppress(OSError):
            if fs.exists(candidate):
                data = fs.cat_file(candidate)
                if data:
                    return data, "image/png" if candidate.endswith(".png") else "image/jpeg"
    return None, None


def _book_report(doc_uri: str, prepared: PreparedDocument, book: Audiobook, stats: SynthStats) -> dict[str, Any]:
    return {
        "source": doc_uri,
        "title": prepared.document.title,
        "author": prepared.document.author,
        "language": prepared.document.language,
        "encoding": prepared.document.encoding,
        "chapters": [
            {"index": c.index, "title": c.title, "chars": c.n_chars, "chunks": len(c.chunks)} for c in prepared.chapters
        ],
        "preparation": prepared.report.as_dict(),
        "mastering": [f.mastering.as_dict() for f in book.files if f.mastering],
        "synthesis": {
            "chunks": stats.chunks,
            "synthesised": stats.synthesised,
            "cached": stats.cached,
            "cost_usd": round(stats.cost_usd, 6),
            "generation_ids": stats.generation_ids[:50],
            "warnings": stats.warnings,
        },
    }


def _done_rows(
    doc_uri: str,
    rel: str,
    job: _Job,
    prepared: PreparedDocument,
    book: Audiobook,
    stats: SynthStats,
    model: str,
    voice: str | None,
    run_id: str,
    started: datetime,
    outputs: list[str],
    digest: str,
) -> list[dict[str, Any]]:
    finished = utc_now()
    rows = []
    files = book.files or tuple(f for f in book.extras if f.fmt == "m4b")
    for chapter in prepared.chapters:
        spans = [(f, s) for f in files for s in f.chapters if s.index == chapter.index]
        first = spans[0] if spans else None
        keys = {c.cache_key(digest) for c in chapter.chunks}
        rows.append(
            {
                "document_id": job.document_id,
                **name_columns(doc_uri, rel),
                "chapter_index": chapter.index,
                "chapter_title": chapter.title,
                "model": model,
                "voice": voice,
                "n_chars": chapter.n_chars,
                "duration_s": round(sum(s.end_ms - s.start_ms for _, s in spans) / 1000, 3),
                "cost_usd": round(sum(stats.cost_by_key.get(k, 0.0) for k in keys), 8),
                "output_uri": first[0].uri if first else None,
                "status": "done",
                "error_message": None,
                "error_kind": None,
                "run_id": run_id,
                "options_hash": job.digest,
                "finished_at": finished,
                "started_at": started,
                "book_title": prepared.document.title,
                "author": prepared.document.author,
                "language": prepared.document.language,
                "start_s": round(first[1].start_ms / 1000, 3) if first else None,
                "n_chunks": len(chapter.chunks),
                "chunks_synthesised": sum(1 for k in keys if k in stats.cost_by_key),
                "mastering_passed": all(f.mastering.passed for f, _ in spans if f.mastering),
                "outputs": list(outputs),
            }
        )
    return rows


def name_columns(doc_uri: str, rel: str) -> dict[str, Any]:
    """A row's names as valid text, and the rel path's exact bytes (see voxflow.fsnames)."""
    return {"source_uri": printable_name(doc_uri), "rel_path": printable_name(rel), "rel_path_bytes": raw_name(rel)}


def failed_row(
    doc_uri: str,
    rel: str,
    model: str,
    voice: str | None,
    run_id: str,
    exc: BaseException,
    started: datetime,
    spent: SynthStats,
    prefix: str = "",
) -> dict[str, Any]:
    kind = exc.kind if isinstance(exc, VoxflowError) else type(exc).__name__
    reason = str(exc) or type(exc).__name__
    document_id = None
    with contextlib.suppress(VoxflowError, OSError):
        document_id = content_hash(doc_uri)
    return {
        "document_id": document_id,
        **name_columns(doc_uri, rel),
        "chapter_index": None,
        "chapter_title": None,
        "model": model,
        "voice": voice,
        "n_chars": 0,
        "duration_s": 0.0,
        "cost_usd": round(spent.cost_usd, 8),
        "output_uri": None,
        "status": "failed",
        "error_kind": kind,
        "error_message": f"{printable_name(rel)}: {prefix}{reason}",
        "run_id": run_id,
        "options_hash": None,
        "finished_at": utc_now(),
        "started_at": started,
        "book_title": None,
        "author": None,
        "language": None,
        "start_s": None,
        "n_chunks": 0,
        "chunks_synthesised": spent.synthesised,
        "mastering_passed": None,
        "outputs": [],
    }


def _save_state(out: OutputTree, job: _Job, rows: list[dict[str, Any]], outputs: list[str]) -> None:
    """The book's done-marker; outputs of the previous render that are gone from this one
    (a renamed chapter, a changed layout) are removed."""
    previous = _load_state(out, job.key) or {}
    stale = set(previous.get("outputs") or []) - set(outputs)
    for uri in stale:
        with contextlib.suppress(OSError, SourceError):
            fs, path = resolve(uri)
            if path.startswith(out.root.rstrip("/") + "/audiobooks/"):
                fs.rm(path)
    keep = [{k: v for k, v in row.items() if k not in ("started_at", "finished_at", "rel_path_bytes")} for row in rows]
    state = {"job": job.digest, "document_id": job.document_id, "rows": keep, "outputs": outputs}
    write_local_atomic(_state_path(out, job.key), json.dumps(state, default=str).encode())
