"""The transcription job in plain Python (no Prefect): plan a run, transcribe one recording,
finish the run. ``flows/transcribe.py`` orchestrates these; tests call them directly.

plan_run:  scan → hash (cached by size+mtime) → skip what the catalog has done with the same
           content, model and options; restore sidecars of moved files from the catalog.
transcribe_recording: probe → stream to 16 kHz mono WAV + pauses → plan chunks at pauses →
           transcribe chunks concurrently under the run's request limit (checkpointed) →
           stitch → shape cues → write sidecars → one catalog row.
finish_run: flush the catalog, save caches, write ``runs/<run_id>.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from voxflow import interrupts, media, progress, scratch
from voxflow.catalog import CatalogIndex, CatalogWriter, DoneRecord, load_transcript
from voxflow.cluster import request_limiter, where_am_i
from voxflow.engines.base import TranscribeOptions, Transcriber, get_transcriber, is_local
from voxflow.errors import (
    AudioError,
    RequestRejected,
    RunAbort,
    SourceError,
    VoxflowError,
    most_severe,
)
from voxflow.fsnames import printable_name, printable_tree
from voxflow.gates import GatedSegments, gate_segments
from voxflow.known_failures import KnownFailure, KnownFailures
from voxflow.limits import Budget, RequestLimiter
from voxflow.models import (
    AudioChunk,
    PreparedAudio,
    Quality,
    Recording,
    RecordingResult,
    Segment,
    Span,
    Transcript,
    Word,
    language_code,
)
from voxflow.ownership import Claim, OutputLedger, PathState, sha256_of
from voxflow.runs import PerProcess
from voxflow.settings import Settings
from voxflow.sources import (
    NAME_MAX,
    HashCache,
    OutputTree,
    ScanResult,
    Skipped,
    find_paths,
    full_uri,
    local_copy,
    new_run_id,
    resolve,
    scan,
    under,
    write_local_atomic,
)
from voxflow.subtitles import SidecarDoc, render_sidecars, shape_cues, sidecar_name

MIN_SPLIT_MS = 2_000  # a 413 never splits a chunk below this
ALIGNMENT_MODEL = "local/tiny.en"  # times text-only answers
MIN_LANGUAGE_S = 0.05  # less speech than this in a language is not listed in Transcript.languages


def transcribe_options(settings: Settings) -> TranscribeOptions:
    return TranscribeOptions(
        model=settings.transcription_model,
        language=settings.language,
        temperature=settings.temperature,
        diarize=settings.diarize,
        keyterms=settings.keyterms,
        max_chunk_s=settings.max_chunk_s,
        silence_db=settings.silence_db,
        min_silence_s=settings.min_silence_s,
    )


# --- planning ---------------------------------------------------------------------------


@dataclass
class RunPlan:
    """What a run will do, decided before any engine is touched."""

    source: str
    settings: Settings
    options_hash: str
    todo: list[Recording] = field(default_factory=list)
    skipped: list[Recording] = field(default_factory=list)
    restore: list[tuple[Recording, DoneRecord]] = field(default_factory=list)
    twins: list[Recording] = field(default_factory=list)  # same content as a todo recording: written from its result
    failed: list[RecordingResult] = field(default_factory=list)
    unsettled: list[Recording] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # done in the catalog, gone from the source
    passed_over: tuple[Skipped, ...] = ()  # special files, symlinks out of the source: never opened
    known_failures: list[KnownFailure] = field(default_factory=list)  # failed for good, unchanged: not retried
    stems: dict[str, str] = field(default_factory=dict)
    ledger: OutputLedger = field(default_factory=OutputLedger)  # which output files voxflow wrote
    left_alone: list[str] = field(default_factory=list)  # sidecars of skipped recordings not ours
    ignored: int = 0
    found: int = 0

    @property
    def has_work(self) -> bool:
        return bool(self.todo)


def plan_run(source: str, settings: Settings) -> RunPlan:
    """Scan ``source`` and sort recordings into todo / skip / restore / failed; files still
    being copied wait (``unsettled``); done recordings gone from the source are ``deleted``."""
    out = OutputTree(settings.out)
    scanned = scan(
        source, exclude=settings.out, settle_seconds=settings.settle_seconds, follow_symlinks=settings.follow_symlinks
    )
    options = transcribe_options(settings)
    plan = RunPlan(source, settings, options.digest(), ignored=scanned.ignored)
    plan.found = len(scanned.recordings) + len(scanned.unsettled)
    plan.unsettled = list(scanned.unsettled)
    plan.passed_over = scanned.skipped
    plan.stems = sidecar_stems(scanned.recordings + scanned.unsettled)
    cache = HashCache.in_tree(out, source, _writer_name(settings), media=True)
    index = CatalogIndex.load(out)
    plan.ledger = OutputLedger.load(out, index, _writer_name(settings))
    existing = _existing_outputs(settings, out, source, scanned)
    present: set[str] = set()
    known = KnownFailures() if settings.force or settings.retry_failed else KnownFailures.load(out, plan.options_hash)
    cache.prefetch(scanned.recordings, scanned.versions)
    for rec in scanned.recordings:
        try:
            rec = replace(cache.hashed(rec, scanned.versions.get(rec.uri)), sidecar_stem=plan.stems[rec.rel_path])
        except (SourceError, AudioError) as exc:  # unreadable, or not audio/video (never read through)
            if _mine_id(hashlib.sha256(os.fsencode(rec.uri)).hexdigest(), settings.shard):
                _failed_unless_known(plan, rec, exc, known)
            continue
        present.add(rec.recording_id)
        if not _mine(rec, settings.shard):
            continue
        done = None if settings.force else index.get(rec.recording_id, plan.options_hash)
        if done is None:
            _todo_unless_known(plan, rec, known)
        elif _sidecars_settled(rec, done.language, plan, existing):
            plan.skipped.append(rec)
        else:
            _restore_or_redo(plan, rec, index.restorable(rec.recording_id, plan.options_hash))
    cache.save()
    plan.todo, plan.twins = _split_twins(plan.todo)
    plan.deleted = _deleted(source, scanned, present, index, settings.shard)
    return plan


def _todo_unless_known(plan: RunPlan, rec: Recording, known: KnownFailures) -> None:
    """Transcribe ``rec``, unless it failed for good with the same content and options."""
    if failure := known.hashed(rec):
        plan.known_failures.append(failure)
    else:
        plan.todo.append(rec)


def _failed_unless_known(plan: RunPlan, rec: Recording, exc: BaseException, known: KnownFailures) -> None:
    """A file refused before hashing fails the run, unless it failed the same way, unchanged, before."""
    if failure := known.refused(rec, exc):
        plan.known_failures.append(failure)
    else:
        plan.failed.append(_failed(rec, exc, plan.options_hash, plan.settings.transcription_model))


def _restore_or_redo(plan: RunPlan, rec: Recording, done: DoneRecord | None) -> None:
    """Restore from the catalog when it holds the whole transcript, else transcribe again."""
    if done is None:
        plan.todo.append(rec)
    else:
        plan.restore.append((rec, done))


def _split_twins(todo: list[Recording]) -> tuple[list[Recording], list[Recording]]:
    """(recordings to transcribe, the rest): files with the same content as an earlier one
    in ``todo`` are transcribed once; each twin is then written from that one result."""
    first: dict[str, Recording] = {}
    twins = []
    for rec in todo:
        if rec.recording_id in first:
            twins.append(rec)
        else:
            first[rec.recording_id] = rec
    return list(first.values()), twins


def _mine(rec: Recording, shard: str | None) -> bool:
    """True when this worker's shard ("i/n") owns the recording (by content hash)."""
    return _mine_id(rec.recording_id, shard)


def _mine_id(recording_id: str, shard: str | None) -> bool:
    if not shard:
        return True
    index, count = (int(x) for x in shard.split("/"))
    return int(recording_id[:12], 16) % count == index


def _deleted(source: str, scanned: ScanResult, present: set[str], index: CatalogIndex, shard: str | None) -> list[str]:
    """Source URIs of recordings the catalog has done under ``source`` that are gone from it
    (neither the file nor its content is there any more). Their rows are kept."""
    fs, root = resolve(source)
    root_uri = full_uri(fs, root.rstrip("/"))
    here = {r.uri for r in (*scanned.recordings, *scanned.unsettled)}
    gone = {
        done.source_uri
        for done in index.done.values()
        if done.source_uri not in here
        and done.recording_id not in present
        and under(done.source_uri, root_uri)
        and _mine_id(done.recording_id, shard)
    }
    return sorted(gone)


def sidecar_stems(recordings: tuple[Recording, ...]) -> dict[str, str]:
    """Sidecar stem per rel_path: the file stem, or the full name when two files share it;
    cut short (with a tag of the full name) where a sidecar name would pass NAME_MAX."""
    counts = Counter((r.rel_dir, r.stem) for r in recordings)
    return {
        r.rel_path: _fitting_stem(r.stem if counts[(r.rel_dir, r.stem)] == 1 else r.rel_path.rsplit("/", 1)[-1])
        for r in recordings
    }


def _fitting_stem(stem: str) -> str:
    """``stem``, or its first bytes + ``~`` + 8 hex of its hash when ``stem.und.json`` would be
    longer than NAME_MAX bytes (a file system refuses such a name)."""
    raw = os.fsencode(stem)
    room = NAME_MAX - len(".und.json")
    if len(raw) <= room:
        return stem
    tag = "~" + hashlib.sha256(raw).hexdigest()[:8]
    return os.fsdecode(raw[: room - len(tag)]) + tag


def _sidecar_tree(rec: Recording, settings: Settings) -> tuple[OutputTree, str]:
    """(tree, folder within it) where ``rec``'s sidecars go."""
    if settings.beside_source:
        return OutputTree.cached(rec.uri.rsplit("/", 1)[0]), ""
    return OutputTree.cached(settings.out), rec.rel_dir


@dataclass(frozen=True, slots=True)
class SidecarTarget:
    """Where one sidecar of a recording goes, and what is there now."""

    fmt: str
    tree: OutputTree
    rel: str  # within ``tree``
    shown: str  # relative to the source tree, for messages
    state: PathState

    @property
    def uri(self) -> str:
        return self.tree.uri(self.rel)


def _sidecar_targets(
    rec: Recording, language: str, ledger: OutputLedger, settings: Settings, existing: set[str] | None = None
) -> list[SidecarTarget]:
    """The recording's sidecars under the first stem whose paths no other recording owns:
    ``talk``, then ``talk.mp3``, then ``talk.mp3.<id>`` (deterministic)."""
    tree, folder = _sidecar_tree(rec, settings)
    name = rec.rel_path.rsplit("/", 1)[-1]
    stems = dict.fromkeys((rec.sidecar_stem or rec.stem, name, f"{name}.{rec.recording_id[:12]}"))
    for stem in stems:
        targets = [
            _target(rec, tree, folder, sidecar_name(stem, language, fmt), fmt, ledger, existing)
            for fmt in settings.formats
        ]
        if not any(t.state == "taken" for t in targets):
            break
    return targets


def _target(
    rec: Recording, tree: OutputTree, folder: str, name: str, fmt: str, ledger: OutputLedger, existing: set[str] | None
) -> SidecarTarget:
    rel = f"{folder}/{name}" if folder else name
    shown = f"{rec.rel_dir}/{name}" if rec.rel_dir else name
    path = tree.path(rel)

    def read() -> bytes | None:
        if existing is not None and path not in existing:
            return None
        try:
            return bytes(tree.fs.cat_file(path))
        except FileNotFoundError:
            return None

    return SidecarTarget(fmt, tree, rel, shown, ledger.state(tree.uri(rel), rec.recording_id, rec.uri, read))


def _sidecars_settled(rec: Recording, language: str, plan: RunPlan, existing: set[str]) -> bool:
    """True when every sidecar is there as voxflow wrote it, or is a file voxflow leaves alone."""
    settings = plan.settings
    targets = _sidecar_targets(rec, language, plan.ledger, settings, existing)
    foreign = [t for t in targets if t.state == "foreign"]
    if any(t.state == "free" for t in targets) or (foreign and settings.overwrite):
        return False
    plan.left_alone.extend(_left_alone_note(t) for t in foreign)
    return True


def _left_alone_note(target: SidecarTarget) -> str:
    return f"left alone: {target.shown} (not written by voxflow; --overwrite to replace)"


def _existing_outputs(settings: Settings, out: OutputTree, source: str, scanned: ScanResult | None = None) -> set[str]:
    """Every file under the output tree (or the source, beside-source), listed once: taken
    from the scan's own listing when that covers the folder (no second LIST on a bucket)."""
    fs, root = resolve(source) if settings.beside_source else (out.fs, out.root)
    listing = scanned.listing if scanned else None
    if listing is not None and settings.beside_source and listing.single_file:
        root = listing.root  # one file: its sidecars are in its folder
    listed = listing.paths_under(fs, root) if listing is not None else None
    return listed if listed is not None else find_paths(fs, root)


# --- the run: what each process builds for its tasks, and what the planner keeps --------


@dataclass(frozen=True)
class RunSpec:
    """What every task of a run gets besides its recording, serialisable (no secrets, nothing
    open): a worker process on another machine builds its own engine and limits from it."""

    run_id: str
    settings: Settings
    options_hash: str


@dataclass
class RunResources:
    """What the recordings of one run share within one process (engine, limits, output
    ledger): built by the first task a process runs for the run (:func:`resources_for`)."""

    spec: RunSpec
    out: OutputTree
    options: TranscribeOptions
    engine: Transcriber
    chunk_slots: RequestLimiter  # chunks read and encoded at once (bounds memory)
    budget: Budget
    ledger: OutputLedger
    scratch: Path | None = None  # temporary audio of this run (voxflow.scratch)
    aborted: RunAbort | None = None  # set by the first task that aborts: the rest do not start

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def settings(self) -> Settings:
        return self.spec.settings

    @property
    def options_hash(self) -> str:
        return self.spec.options_hash

    @property
    def checkpoint_dir(self) -> Path:
        return self.out.state_dir() / "chunks"


_RESOURCES: PerProcess[RunResources] = PerProcess(on_drop=lambda res: scratch.release(res.scratch))


def resources_for(spec: RunSpec) -> RunResources:
    """This process's resources for the run (built, engine checked, on first use)."""
    return _RESOURCES.get(spec.run_id, lambda: _prepared(_build_resources(spec)))


def _prepared(res: RunResources) -> RunResources:
    asyncio.run(res.engine.prepare())  # key, model, pricing: fail fast
    return res


def _build_resources(
    spec: RunSpec, engine: Transcriber | None = None, ledger: OutputLedger | None = None
) -> RunResources:
    settings = spec.settings
    engine = engine or get_transcriber(settings)
    remote = not is_local(settings.transcription_model)
    engine.use_limiter(request_limiter(settings.concurrency, spec.run_id, remote=remote))
    out = OutputTree(settings.out)
    return RunResources(
        spec=spec,
        out=out,
        options=transcribe_options(settings),
        engine=engine,
        chunk_slots=RequestLimiter(_chunks_read_ahead(engine, settings)),
        budget=Budget(settings.budget_usd),
        ledger=ledger or OutputLedger.load(out, CatalogIndex.load(out), _writer_name(settings)),
    )


def _chunks_read_ahead(engine: Transcriber, settings: Settings) -> int:
    """Chunks read and encoded at once: two per request in flight, or the engine's own bound
    (the embedded one transcribes one at a time, so more would only wait in memory)."""
    return engine.waiting_chunks or 2 * settings.concurrency


def _writer_name(settings: Settings) -> str:
    return "s" + settings.shard.replace("/", "of") if settings.shard else "w0"


@dataclass
class RunContext:
    """What the planning process keeps for a run: the plan, the catalog writer, the outcome."""

    spec: RunSpec
    plan: RunPlan
    out: OutputTree
    catalog: CatalogWriter
    started_at: float = field(default_factory=time.time)
    aborted: RunAbort | None = None
    left_alone: list[str] = field(default_factory=list)  # sidecar files voxflow did not write

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def settings(self) -> Settings:
        return self.spec.settings

    @property
    def model(self) -> str:
        return self.settings.transcription_model


def open_run(plan: RunPlan, run_id: str | None = None, engine: Transcriber | None = None) -> RunContext:
    """Start a run: the planning process builds its own resources now (so a bad key or model
    stops the run before any task); tasks in other processes build theirs from the spec."""
    settings = plan.settings
    spec = RunSpec(run_id or new_run_id(), settings, plan.options_hash)
    out = OutputTree(settings.out)
    scratch.sweep(out)  # what runs killed earlier left behind
    res = _build_resources(spec, engine or _engine_if_needed(plan), plan.ledger)
    _RESOURCES.put(spec.run_id, _prepared(res) if plan.todo else res)
    return RunContext(
        spec=spec, plan=plan, out=out, catalog=CatalogWriter(out, spec.run_id, writer=_writer_name(settings))
    )


# --- one recording (runs wherever the task runs) ------------------------------------


@dataclass(frozen=True)
class RecordingOutcome:
    """What a recording's task hands back to the planning process, serialisable."""

    result: RecordingResult | None  # None: the run was interrupted before the recording finished
    claims: tuple[dict[str, Any], ...] = ()  # ``outputs`` rows of the sidecars it wrote
    left_alone: tuple[str, ...] = ()  # sidecar files voxflow did not write and did not replace
    checkpoints: str | None = None  # its chunk checkpoints: dropped once the catalog has the rows


def transcribe_recording(rec: Recording, spec: RunSpec) -> RecordingOutcome:
    """Transcribe one recording and write its sidecars (never raises, except RunAbort, which
    stops the run). Its catalog rows are written by the planning process from the outcome;
    an interrupted recording has none (its finished chunks stay checkpointed)."""
    if interrupts.requested():
        return RecordingOutcome(None)
    res = resources_for(spec)
    started = time.time()
    progress.emit("started", recording=rec.rel_path)
    if res.aborted:
        return RecordingOutcome(
            _failed(rec, res.aborted, res.options_hash, res.options.model, started, "not started: ")
        )
    try:
        return _transcribe(rec, res, started)
    except RunAbort as exc:
        res.aborted = res.aborted or exc
        raise
    except Exception as exc:  # a bug or an infrastructure fault: still one clear row
        if interrupts.requested():  # e.g. ffmpeg got the terminal's Ctrl-C too
            return RecordingOutcome(None)
        return RecordingOutcome(_failed(rec, exc, res.options_hash, res.options.model, started))


def record_outcome(ctx: RunContext, outcome: RecordingOutcome) -> RecordingResult | None:
    """In the planning process: a task's outcome into the catalog (checkpoints dropped once flushed)."""
    if outcome.result is None:
        return None
    ctx.catalog.add_rows("outputs", outcome.claims)
    ctx.left_alone.extend(outcome.left_alone)
    clear = ChunkCheckpoints(Path(outcome.checkpoints)).clear if outcome.checkpoints else None
    return _record(ctx, outcome.result, clear)


def task_failed(rec: Recording, exc: BaseException, ctx: RunContext) -> RecordingResult:
    """The row of a recording whose task raised (an infrastructure fault past its retries):
    the flow records it so the catalog and the manifest still name the recording."""
    result = _failed(rec, exc, ctx.plan.options_hash, ctx.model, prefix="task failed: ")
    try:
        return _record(ctx, result)
    except Exception:  # the catalog itself is failing: the manifest still lists it
        return result


def _record(ctx: RunContext, result: RecordingResult, on_flushed: Callable[[], None] | None = None) -> RecordingResult:
    ctx.catalog.add_result(result, on_flushed)
    progress.emit("finished", result=result)
    return result


def _failed(
    rec: Recording,
    exc: BaseException,
    options_hash: str,
    model: str,
    started: float = 0.0,
    prefix: str = "",
) -> RecordingResult:
    kind = exc.kind if isinstance(exc, VoxflowError) else type(exc).__name__
    return RecordingResult(
        recording=rec,
        status="failed",
        model=model,
        options_hash=options_hash,
        error_kind=kind,
        error_message=f"{rec.rel_path}: {prefix}{exc}",
        started_at=started or time.time(),
        finished_at=time.time(),
        worker=where_am_i(),
    )


def _transcribe(rec: Recording, ctx: RunResources, started: float) -> RecordingOutcome:
    suffix = "." + rec.rel_path.rsplit(".", 1)[-1] if "." in rec.rel_path else ""
    with (
        local_copy(rec.uri, suffix=suffix, folder=_scratch_of(ctx)) as path,
        tempfile.TemporaryDirectory(prefix="rec-", dir=_scratch_of(ctx)) as tmp,
    ):
        info = media.probe(path)
        prepared = media.prepare_audio(
            path,
            str(Path(tmp) / "audio.wav"),
            silence_db=ctx.settings.silence_db,
            min_silence_s=ctx.settings.min_silence_s,
            expected_ms=info.duration_ms,
        )
        progress.emit("probed", recording=rec.rel_path, duration_ms=prepared.duration_ms)
        transcript, stats = asyncio.run(_transcribe_and_close(prepared, rec, ctx))
        translation = _translation(prepared, transcript, ctx)
    warnings = [w for w in (prepared.decode_warning, stats.note, stats.gate_note) if w]
    # Cues end inside the recording as any player sees it: the shorter of the container's
    # duration and what decoded (they differ by encoder padding, or by a truncated tail).
    playable_ms = min(prepared.duration_ms, info.duration_ms or prepared.duration_ms)
    writes = [_write_outputs(rec, transcript, playable_ms, ctx.ledger, ctx.spec)]
    if translation is not None:
        writes.append(_write_outputs(rec, translation, playable_ms, ctx.ledger, ctx.spec))
    left_alone = [note for w in writes for note in w.left_alone]
    outputs = [uri for w in writes for uri in w.written]
    result = RecordingResult(
        recording=rec,
        status="done",
        model=ctx.options.model,
        options_hash=ctx.options_hash,
        duration_ms=prepared.duration_ms,
        language=language_code(transcript.language),
        language_probability=transcript.language_probability,
        languages=transcript.languages,
        text=transcript.text,
        segments=transcript.segments,
        n_chunks=stats.chunks,
        attempts=stats.requests,
        cost_usd=transcript.cost_usd,
        started_at=started,
        finished_at=time.time(),
        outputs=tuple(outputs),
        warnings=(*warnings, *left_alone),
        truncated=prepared.truncated,
        quality=_quality(transcript, prepared, stats),
        worker=where_am_i(),
    )
    claims = tuple(c.row() for w in writes for c in w.claims)
    folder = str(stats.checkpoints.folder) if stats.checkpoints else None
    return RecordingOutcome(result, claims, tuple(left_alone), folder)


def _quality(transcript: Transcript, prepared: PreparedAudio, stats: ChunkStats) -> Quality:
    pauses_ms = sum(s.duration_ms for s in prepared.silences)
    return Quality(
        segments_dropped=stats.segments_dropped,
        max_chars_per_s=stats.max_chars_per_s,
        speech_s=sum(s.end_ms - s.start_ms for s in transcript.segments) / 1000,
        detected_speech_s=max(prepared.duration_ms - pauses_ms, 0) / 1000,
    )


def _scratch_of(ctx: RunResources) -> Path:
    """The run's scratch folder (made on first use, e.g. by a worker process)."""
    if ctx.scratch is None or not ctx.scratch.is_dir():
        ctx.scratch = scratch.run_scratch(ctx.out, ctx.run_id)
    return ctx.scratch


def _translation(prepared: PreparedAudio, transcript: Transcript, ctx: RunResources) -> Transcript | None:
    """The English version --translate-to asks for, when the recording is in another language:
    each chunk translated offline by the multilingual model (Whisper's translate task)."""
    from voxflow.engines.local import LocalTranscriber
    from voxflow.engines.multilingual import translate_by_language

    target = ctx.settings.translate_to
    engine = ctx.engine
    if not target or language_code(transcript.language) == target or not transcript.segments:
        return None
    if not isinstance(engine, LocalTranscriber) or engine.english_only:
        return None
    max_ms = round(min(ctx.settings.max_chunk_s, engine.max_chunk_s) * 1000)
    spans = media.plan_chunks(
        prepared.duration_ms, prepared.silences, max_ms, quietest=lambda w: media.quietest_point(prepared.wav_path, w)
    )
    stats = ChunkStats()
    parts = []
    for span in (s for s in spans if not _all_silence(s, prepared.silences)):
        part = translate_by_language(engine, media.read_pcm(prepared.wav_path, span), ctx.settings.language)
        parts.append(_gated(_clamped(part.shifted(span.start_ms), span), stats))
    return replace(stitch(parts, target), language=target)


@dataclass
class ChunkStats:
    chunks: int = 0
    requests: int = 0
    note: str = ""
    checkpoints: ChunkCheckpoints | None = None  # cleared once the catalog has the result
    recording: str = ""  # rel_path, for progress events
    segments_dropped: int = 0  # refused by a hallucination gate (voxflow/gates.py)
    max_chars_per_s: float = 0.0  # the fastest kept segment

    def count_gated(self, gated: GatedSegments) -> None:
        self.segments_dropped += gated.n_dropped
        self.max_chars_per_s = max(self.max_chars_per_s, gated.max_chars_per_s)

    @property
    def gate_note(self) -> str:
        if not self.segments_dropped:
            return ""
        return (
            f"{self.segments_dropped} segment(s) dropped by the hallucination gates (looping or impossibly fast text)"
        )


async def _transcribe_and_close(
    prepared: PreparedAudio, rec: Recording, ctx: RunResources
) -> tuple[Transcript, ChunkStats]:
    """Transcribe in this thread's event loop, then close the engine's pool for this loop."""
    try:
        if is_local(ctx.options.model):
            return await transcribe_prepared(prepared, rec, ctx)
        from voxflow.engines.openrouter import count_requests

        with count_requests() as sent:
            transcript, stats = await transcribe_prepared(prepared, rec, ctx)
        stats.requests = sent.value
        return transcript, stats
    finally:
        await ctx.engine.aclose()


async def transcribe_prepared(
    prepared: PreparedAudio, rec: Recording, ctx: RunResources
) -> tuple[Transcript, ChunkStats]:
    """Transcribe a prepared recording chunk by chunk, concurrently, and stitch the parts."""
    stats = ChunkStats(recording=rec.rel_path)
    if prepared.peak_db < media.SILENT_PEAK_DB:
        stats.note = f"no speech: the recording is silent (peak {prepared.peak_db:.0f} dB)"
        return Transcript(text="", language=ctx.settings.language or "und"), stats
    max_ms = round(min(ctx.settings.max_chunk_s, ctx.engine.max_chunk_s) * 1000)
    spans = media.plan_chunks(
        prepared.duration_ms,
        prepared.silences,
        max_ms,
        quietest=lambda w: media.quietest_point(prepared.wav_path, w),
    )
    speech = [s for s in spans if not _all_silence(s, prepared.silences)]
    stats.chunks = len(spans)
    checkpoints = ChunkCheckpoints(ctx.checkpoint_dir / rec.recording_id / ctx.options_hash)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_transcribe_span(span, prepared, ctx, checkpoints, stats)) for span in speech]
    except ExceptionGroup as group_error:
        raise most_severe(group_error) from None
    parts = [t.result() for t in tasks]
    stats.checkpoints = checkpoints
    return stitch(parts, ctx.settings.language), stats


def _all_silence(span: Span, silences: tuple[Span, ...]) -> bool:
    return any(s.start_ms <= span.start_ms and span.end_ms <= s.end_ms for s in silences)


async def _transcribe_span(
    span: Span,
    prepared: PreparedAudio,
    ctx: RunResources,
    checkpoints: ChunkCheckpoints,
    stats: ChunkStats,
) -> Transcript:
    """One chunk (from its checkpoint if an earlier run got it); 413 splits it in two."""
    saved = checkpoints.load(span)
    if saved is not None:
        progress.emit("chunk", recording=stats.recording, duration_ms=span.duration_ms)
        return saved
    if interrupts.requested():
        raise interrupts.Interrupted("the run was interrupted before this chunk")
    try:
        async with (
            ctx.chunk_slots.slot(),
            ctx.budget.reserve(_estimate(ctx.engine, span)) as reservation,  # held while the chunk is out
        ):
            chunk = _encode(span, prepared, ctx.engine)
            stats.requests += 1
            part = await ctx.engine.transcribe(chunk, ctx.options)
            reservation.settle(part.cost_usd)
    except RequestRejected as exc:
        if exc.status != 413 or span.duration_ms < 2 * MIN_SPLIT_MS:
            raise
        return await _split_and_transcribe(span, prepared, ctx, checkpoints, stats)
    if not part.timed and part.text.strip():
        part = await _timed_from_text(part, span, prepared)
    part = _gated(_clamped(part.shifted(span.start_ms), span), stats)
    checkpoints.save(span, part)
    progress.emit("chunk", recording=stats.recording, duration_ms=span.duration_ms)
    return part


def _gated(part: Transcript, stats: ChunkStats) -> Transcript:
    """``part`` without the segments a hallucination gate refuses (counted in ``stats``)."""
    gated = gate_segments(part.segments)
    stats.count_gated(gated)
    if not gated.n_dropped:
        return part
    return replace(part, text=" ".join(s.text.strip() for s in gated.kept), segments=gated.kept)


async def _split_and_transcribe(
    span: Span,
    prepared: PreparedAudio,
    ctx: RunResources,
    checkpoints: ChunkCheckpoints,
    stats: ChunkStats,
) -> Transcript:
    middle = Span(span.start_ms + span.duration_ms // 4, span.end_ms - span.duration_ms // 4)
    cut = media.quietest_point(prepared.wav_path, middle)
    halves = [Span(span.start_ms, cut), Span(cut, span.end_ms)]
    parts = [await _transcribe_span(h, prepared, ctx, checkpoints, stats) for h in halves]
    return stitch(parts, ctx.settings.language)


async def _timed_from_text(part: Transcript, span: Span, prepared: PreparedAudio) -> Transcript:
    """Timings for a text-only answer: align its words with the embedded engine's timed words
    for the same chunk (times relative to the chunk), or spread them evenly without it."""
    from voxflow.align import align_words, even_timing
    from voxflow.engines.local import LocalTranscriber

    span_ms = span.duration_ms
    try:
        local = LocalTranscriber.shared(ALIGNMENT_MODEL)
        pcm = media.read_pcm(prepared.wav_path, span)
        heard = await local.transcribe(AudioChunk(0, 0, span_ms, pcm, "pcm"), TranscribeOptions(ALIGNMENT_MODEL))
        reference = [w for s in heard.segments for w in s.words]
        segments = align_words(part.text, reference, span_ms) if reference else even_timing(part.text, span_ms)
    except VoxflowError:
        segments = even_timing(part.text, span_ms)
    return replace(part, segments=segments, timed=True)


def _estimate(engine: Transcriber, span: Span) -> float:
    return engine.estimate_cost(span.duration_ms)


def _encode(span: Span, prepared: PreparedAudio, engine: Transcriber) -> AudioChunk:
    pcm = media.read_pcm(prepared.wav_path, span)
    data = media.encode_pcm(pcm, engine.upload_format)
    if len(data) > engine.max_upload_bytes():
        raise RequestRejected(f"chunk of {span.duration_ms / 1000:.0f} s is too large", status=413)
    return AudioChunk(
        index=0,
        offset_ms=span.start_ms,
        duration_ms=span.duration_ms,
        data=data,
        format=engine.upload_format,
    )


def _clamped(part: Transcript, span: Span) -> Transcript:
    """Keep an engine's times inside the chunk it was given."""

    def clamp(ms: int) -> int:
        return min(max(ms, span.start_ms), span.end_ms)

    segments = tuple(
        Segment(
            clamp(s.start_ms),
            max(clamp(s.end_ms), clamp(s.start_ms)),
            s.text,
            tuple(
                Word(
                    clamp(w.start_ms),
                    max(clamp(w.end_ms), clamp(w.start_ms)),
                    w.word,
                    w.confidence,
                    w.speaker,
                )
                for w in s.words
            ),
            s.speaker,
            s.confidence,
        )
        for s in part.segments
    )
    if not segments and part.text.strip():  # text only: one segment over the chunk for now
        segments = (Segment(span.start_ms, span.end_ms, part.text.strip()),)
    return replace(part, segments=segments)


def stitch(parts: list[Transcript], language_hint: str | None = None) -> Transcript:
    """Join chunk transcripts (already on the recording's clock) in order."""
    segments = tuple(s for p in parts for s in p.segments)
    heard = Counter[str]()
    for p in parts:
        heard.update(_speech_seconds(p))
    heard.pop("und", None)
    language = heard.most_common(1)[0][0] if heard else language_code(language_hint)
    return Transcript(
        text=" ".join(p.text.strip() for p in parts if p.text.strip()),
        language=language,
        segments=segments,
        cost_usd=sum(p.cost_usd for p in parts),
        timed=all(p.timed for p in parts),
        language_probability=_probability_of(language, parts),
        languages=tuple((code, round(s, 1)) for code, s in heard.most_common() if s >= MIN_LANGUAGE_S),
    )


def _speech_seconds(part: Transcript) -> Counter[str]:
    """Seconds of speech per language in ``part`` (a token amount when it has no segments)."""
    if part.languages:
        return Counter({language_code(code): seconds for code, seconds in part.languages})
    seconds = sum(s.end_ms - s.start_ms for s in part.segments) / 1000
    return Counter({language_code(part.language): seconds or 0.001})


def _probability_of(language: str, parts: list[Transcript]) -> float | None:
    """Speech-weighted detection probability of ``language`` over the parts that detected one
    (a part whose own language differs counts as 0); None when no part detected."""
    weighed = [(sum(_speech_seconds(p).values()), p) for p in parts if p.language_probability is not None]
    total = sum(w for w, _ in weighed)
    if not total:
        return None
    sure = sum(w * p.language_probability for w, p in weighed if language_code(p.language) == language)  # type: ignore[operator]
    return round(sure / total, 4)


# --- checkpoints ----------------------------------------------------------------------


class ChunkCheckpoints:
    """One JSON file per finished chunk, so a killed run resends only what never came back."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _file(self, span: Span) -> Path:
        return self.folder / f"{span.start_ms}-{span.end_ms}.json"

    def load(self, span: Span) -> Transcript | None:
        try:
            return transcript_from_dict(json.loads(self._file(span).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, span: Span, part: Transcript) -> None:
        write_local_atomic(self._file(span), json.dumps(asdict(part)).encode())

    def clear(self) -> None:
        if self.folder.exists():
            for f in self.folder.glob("*.json"):
                f.unlink(missing_ok=True)
            for d in (self.folder, self.folder.parent):
                try:
                    d.rmdir()
                except OSError:
                    break


def transcript_from_dict(data: dict[str, Any]) -> Transcript:
    segments = tuple(
        Segment(
            s["start_ms"],
            s["end_ms"],
            s["text"],
            tuple(Word(**w) for w in s["words"]),
            s["speaker"],
            s["confidence"],
        )
        for s in data["segments"]
    )
    languages = tuple((str(code), float(seconds)) for code, seconds in data.get("languages", ()))
    return Transcript(
        data["text"],
        data["language"],
        segments,
        data["cost_usd"],
        data["timed"],
        data.get("language_probability"),
        languages,
    )


# --- outputs --------------------------------------------------------------------------


@dataclass
class SidecarWrites:
    written: list[str]  # URIs
    claims: list[Claim]  # ledger entries for ``written``
    left_alone: list[str]  # notes on files voxflow did not write and did not replace


def write_sidecars(
    rec: Recording,
    transcript: Transcript,
    duration_ms: int,
    ledger: OutputLedger,
    settings: Settings,
    *,
    run_id: str = "",
    writer: str = "w0",
) -> SidecarWrites:
    """Write the subtitle/transcript sidecars of one recording, claiming each in the ledger
    first; a file voxflow did not write is left alone (``--overwrite`` replaces it)."""
    language = language_code(transcript.language)
    cues = shape_cues(transcript.segments, duration_ms)
    doc = SidecarDoc(
        text=transcript.text,
        language=language,
        model=settings.transcription_model,
        duration_ms=duration_ms,
        segments=transcript.segments,
        cues=tuple(cues),
        extra={"source": printable_name(rec.rel_path), "recording_id": rec.recording_id},
    )
    rendered = render_sidecars(doc, settings.formats)
    targets = _sidecar_targets(rec, language, ledger, settings)
    writable = [t for t in targets if t.state != "foreign" or settings.overwrite]
    now = time.time()
    claims = [
        Claim(ledger.key(t.uri), rec.recording_id, rec.uri, sha256_of(rendered[t.fmt].encode("utf-8")), run_id, now)
        for t in writable
    ]
    ledger.journal(claims, writer, run_id)
    written = [t.tree.write_text(t.rel, rendered[t.fmt]) for t in writable]
    left_alone = [_left_alone_note(t) for t in targets if t not in writable]
    return SidecarWrites(written, claims, left_alone)


def _write_outputs(
    rec: Recording, transcript: Transcript, duration_ms: int, ledger: OutputLedger, spec: RunSpec
) -> SidecarWrites:
    """write_sidecars within a run (the claims reach the catalog with the recording's rows)."""
    writer = _writer_name(spec.settings)
    return write_sidecars(rec, transcript, duration_ms, ledger, spec.settings, run_id=spec.run_id, writer=writer)


def _write_here(rec: Recording, transcript: Transcript, duration_ms: int, ctx: RunContext) -> SidecarWrites:
    """_write_outputs in the planning process: claims and notes go straight to the run."""
    writes = _write_outputs(rec, transcript, duration_ms, ctx.plan.ledger, ctx.spec)
    ctx.catalog.add_rows("outputs", [c.row() for c in writes.claims])
    ctx.left_alone.extend(writes.left_alone)
    return writes


def restore_recording(rec: Recording, done: DoneRecord, ctx: RunContext) -> RecordingResult:
    """Write the sidecars of an already-transcribed recording (moved, renamed, or sidecars
    deleted) from the catalog, without the engine; copies its rows under this run. Runs in
    the planning process (no engine, no model: nothing worth a worker)."""
    started = time.time()
    try:
        transcript = load_transcript(ctx.out, done)
        writes = _write_here(rec, transcript, round(done.duration_s * 1000), ctx)
    except VoxflowError as exc:
        return _record(ctx, _failed(rec, exc, ctx.plan.options_hash, done.model, started))
    result = RecordingResult(
        recording=rec,
        status="done",
        model=done.model,
        options_hash=done.options_hash,
        duration_ms=round(done.duration_s * 1000),
        language=done.language,
        text=transcript.text,
        segments=transcript.segments,
        started_at=started,
        finished_at=time.time(),
        outputs=tuple(writes.written),
        warnings=(
            f"sidecars restored from the catalog (run {done.run_id}); not sent to the engine",
            *writes.left_alone,
        ),
        worker=where_am_i(),
    )
    return _record(ctx, result)


def write_twin(twin: Recording, results: list[RecordingResult], ctx: RunContext) -> RecordingResult:
    """A recording with the same content as one transcribed in this run: its sidecars and its
    own transcripts row from that result (the catalog keeps one copy of segments and words)."""
    started = time.time()
    leader = next((r for r in results if r.recording.recording_id == twin.recording_id), None)
    if leader is None:
        why = ctx.aborted or VoxflowError("the file with the same content was not transcribed")
        return _record(ctx, _failed(twin, why, ctx.plan.options_hash, ctx.model, started, "not started: "))
    if leader.status != "done":
        failed = replace(leader, recording=twin, error_message=f"{twin.rel_path}: {leader.error_message}")
        return _record(ctx, failed)
    transcript = Transcript(leader.text, leader.language, leader.segments)
    try:
        writes = _write_here(twin, transcript, leader.duration_ms, ctx)
    except VoxflowError as exc:
        return _record(ctx, _failed(twin, exc, ctx.plan.options_hash, leader.model, started))
    note = f"same content as {printable_name(leader.recording.rel_path)}: written from its transcript"
    twin_result = replace(
        leader,
        recording=twin,
        outputs=tuple(writes.written),
        warnings=(*leader.warnings, note, *writes.left_alone),
        n_chunks=0,
        attempts=0,
        cost_usd=0.0,
        started_at=started,
        finished_at=time.time(),
        worker=where_am_i(),
    )
    return _record(ctx, twin_result)


# --- finishing ------------------------------------------------------------------------


@dataclass
class RunSummary:
    run_id: str
    done: int
    failed: int
    skipped: int
    restored: int
    not_started: int
    unsettled: int
    ignored: int
    audio_s: float
    cost_usd: float
    wall_s: float
    aborted: str | None
    failures: list[dict[str, str]]
    manifest: str
    exit_code: int
    deleted: int = 0  # done in the catalog, gone from the source (rows kept)
    interrupted: bool = False  # Ctrl-C / SIGTERM: stopped starting work (exit 130)
    left_undone: int = 0
    left_alone: list[str] = field(default_factory=list)  # sidecar files voxflow did not write
    known_failures: list[dict[str, str]] = field(default_factory=list)  # failed for good earlier, unchanged

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def finish_run(ctx: RunContext, results: list[RecordingResult]) -> RunSummary:
    """Flush the catalog, write the run manifest, and say how the run went."""
    plan = ctx.plan
    results = [*results, *(write_twin(twin, results, ctx) for twin in plan.twins)]
    for failure in plan.failed:
        ctx.catalog.add_result(failure)
    ctx.catalog.add_rows("outputs", plan.ledger.adopt_dead_journals())
    ctx.catalog.flush()
    plan.ledger.drop_journals(_writer_name(ctx.settings), ctx.run_id)
    left_alone = [*plan.left_alone, *ctx.left_alone]
    everything = [*plan.failed, *results]
    failed = [r for r in everything if r.status == "failed"]
    not_started = [r for r in failed if r.error_message and ": not started: " in r.error_message]
    done_ids = {r.recording.rel_path for r in everything if r.status == "done"}
    undone = [r.rel_path for r in plan.todo if r.rel_path not in done_ids]
    aborted = f"{ctx.aborted.kind}: {ctx.aborted}" if ctx.aborted else None
    interrupted = interrupts.requested()
    exit_code = interrupts.INTERRUPTED_EXIT if interrupted else 3 if ctx.aborted else (1 if failed else 0)
    manifest = {
        "run_id": ctx.run_id,
        "source": plan.source,
        "settings": ctx.settings.public_dict(),
        "model": ctx.model,
        "options_hash": plan.options_hash,
        "started_at": ctx.started_at,
        "finished_at": time.time(),
        "counts": {
            "found": plan.found,
            "done": sum(r.status == "done" for r in results) - len(plan.restore),
            "restored": len(plan.restore),
            "skipped": len(plan.skipped),
            "failed": len(failed),
            "unsettled": len(plan.unsettled),
            "ignored": plan.ignored,
            "deleted": len(plan.deleted),
        },
        "audio_s": sum(r.duration_ms for r in results) / 1000,
        "cost_usd": round(sum(r.cost_usd for r in results), 6),
        "aborted": aborted,
        "interrupted": interrupted,
        "left_undone": undone if ctx.aborted or interrupted else [],
        "errors": [{"file": r.recording.rel_path, "kind": r.error_kind, "message": r.error_message} for r in failed],
        "unsettled": [r.rel_path for r in plan.unsettled],
        "passed_over": [{"path": p.rel_path, "reason": p.reason} for p in plan.passed_over],
        "deleted": plan.deleted,
        "known_failures": [k.as_dict() for k in plan.known_failures],
        "skipped": [r.rel_path for r in plan.skipped],
        "left_alone": left_alone,
        "catalog_parts": ctx.catalog.written,
    }
    manifest_uri = ctx.out.write_text(
        f"runs/{ctx.run_id}.json", json.dumps(printable_tree(manifest), indent=2, default=str)
    )
    _RESOURCES.drop(ctx.run_id)
    return RunSummary(
        run_id=ctx.run_id,
        done=manifest["counts"]["done"],
        failed=len(failed),
        skipped=len(plan.skipped),
        restored=len(plan.restore),
        not_started=len(not_started),
        unsettled=len(plan.unsettled),
        ignored=plan.ignored,
        audio_s=manifest["audio_s"],
        cost_usd=manifest["cost_usd"],
        wall_s=round(time.time() - ctx.started_at, 3),
        aborted=aborted,
        failures=manifest["errors"],
        manifest=manifest_uri,
        exit_code=exit_code,
        deleted=len(plan.deleted),
        interrupted=interrupted,
        left_undone=len(manifest["left_undone"]),
        left_alone=left_alone,
        known_failures=manifest["known_failures"],
    )


def run_inline(plan: RunPlan, run_id: str | None = None) -> RunSummary:
    """Run a plan without Prefect, one recording after another (no-op runs, tests)."""
    ctx = open_run(plan, run_id)
    results = [restore_recording(rec, done, ctx) for rec, done in plan.restore]
    for rec in plan.todo:
        try:
            result = record_outcome(ctx, transcribe_recording(rec, ctx.spec))
        except RunAbort as exc:
            ctx.aborted = ctx.aborted or exc
            continue
        if result is not None:
            results.append(result)
    return finish_run(ctx, results)


def _engine_if_needed(plan: RunPlan) -> Transcriber | None:
    """No engine is built (no model loaded, no key checked) for a run with nothing to send."""
    return None if plan.todo else _NullEngine(plan.settings.transcription_model)


class _NullEngine(Transcriber):
    upload_format = "pcm"
    max_chunk_s = 600.0

    def __init__(self, model: str) -> None:
        self.model = model

    async def transcribe(self, chunk: AudioChunk, options: TranscribeOptions) -> Transcript:
        raise AudioError("no engine in a run without work")


__all__ = [
    "RecordingOutcome",
    "RunContext",
    "RunPlan",
    "RunSpec",
    "RunSummary",
    "finish_run",
    "is_local",
    "open_run",
    "plan_run",
    "record_outcome",
    "resources_for",
    "restore_recording",
    "run_inline",
    "task_failed",
    "transcribe_recording",
]
