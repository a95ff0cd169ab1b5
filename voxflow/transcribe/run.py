"""A transcription run in the planning process: open it, record each task's outcome in the
catalog as it arrives, write twins and restored sidecars, finish with the manifest and the
exit code. ``run_inline`` runs a plan without Prefect (no-op runs, tests)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from voxflow import interrupts, progress, scratch
from voxflow.cluster import where_am_i
from voxflow.engines.base import TranscribeOptions, Transcriber
from voxflow.errors import (
    AudioError,
    NotStarted,
    RunAbort,
    VoxflowError,
)
from voxflow.fsnames import printable_name
from voxflow.io.catalog import CatalogWriter, DoneRecord, load_transcript
from voxflow.io.outputs import OutputTree, new_run_id
from voxflow.models import (
    AudioChunk,
    Recording,
    RecordingResult,
    Transcript,
)
from voxflow.runs import exit_code, write_manifest
from voxflow.transcribe.chunks import ChunkCheckpoints
from voxflow.transcribe.job import (
    RESOURCES,
    OfRun,
    RecordingOutcome,
    RunSpec,
    build_resources,
    prepared,
    transcribe_recording,
    write_outputs,
)
from voxflow.transcribe.minutes import (
    MinutesJob,
    failed_minutes_row,
    minutes_failures,
    minutes_for,
)
from voxflow.transcribe.outputs import ChatOutcome, SidecarWrites
from voxflow.transcribe.plan import RunPlan, failed_result, writer_name
from voxflow.transcribe.translations import (
    CueTimes,
    TranslationJob,
    failed_rows,
    original_cue_times,
    targets_for,
    translate_recording,
    translation_failures,
)


@dataclass
class RunContext(OfRun):
    """What the planning process keeps for a run: the plan, the catalog writer, the outcome."""

    spec: RunSpec
    plan: RunPlan
    out: OutputTree
    catalog: CatalogWriter
    started_at: float = field(default_factory=time.time)
    aborted: RunAbort | None = None
    left_alone: list[str] = field(default_factory=list)  # sidecar files voxflow did not write
    translations: list[dict[str, Any]] = field(default_factory=list)  # ``translations`` rows of this run
    minutes: list[dict[str, Any]] = field(default_factory=list)  # ``minutes`` rows of this run

    @property
    def model(self) -> str:
        return self.settings.transcription_model


def open_run(
    plan: RunPlan, run_id: str | None = None, engine: Transcriber | None = None, started_at: float | None = None
) -> RunContext:
    """Start a run: the planning process builds its own resources now (so a bad key or model
    stops the run before any task); tasks in other processes build theirs from the spec.
    ``started_at``: when the command started (its manifest's start), else now."""
    settings = plan.settings
    spec = RunSpec(run_id or new_run_id(), settings, plan.options_hash)
    out = OutputTree(settings.out)
    scratch.sweep(out)  # what runs killed earlier left behind
    res = build_resources(spec, engine or _engine_if_needed(plan), plan.ledger)
    RESOURCES.put(spec.run_id, prepared(res) if plan.todo or plan.translate or plan.minutes else res)
    return RunContext(
        spec=spec,
        plan=plan,
        out=out,
        catalog=CatalogWriter(out, spec.run_id, writer=writer_name(settings)),
        started_at=started_at or time.time(),
    )


def record_outcome(ctx: RunContext, outcome: RecordingOutcome) -> RecordingResult | None:
    """In the planning process: a task's outcome into the catalog (checkpoints dropped once flushed)."""
    if outcome.result is None:
        return None
    ctx.catalog.add_rows("outputs", outcome.claims)
    _add_translations(ctx, outcome.translations)
    _add_minutes(ctx, outcome.minutes)
    ctx.aborted = ctx.aborted or outcome.aborted
    ctx.left_alone.extend(outcome.left_alone)
    clear = ChunkCheckpoints(Path(outcome.checkpoints)).clear if outcome.checkpoints else None
    return _record(ctx, outcome.result, clear)


def _add_translations(ctx: RunContext, rows: Sequence[dict[str, Any]]) -> None:
    ctx.catalog.add_rows("translations", rows)
    ctx.translations.extend(rows)


def _add_minutes(ctx: RunContext, rows: Sequence[dict[str, Any]]) -> None:
    ctx.catalog.add_rows("minutes", rows)
    ctx.minutes.extend(rows)


def minutes_missing(ctx: RunContext) -> None:
    """The --minutes the plan found missing for recordings already done: each made from the
    transcript in the catalog (no audio, no transcription), in the planning process."""
    for rec, done in ctx.plan.minutes:
        if ctx.aborted or interrupts.requested():
            return
        try:
            transcript = load_transcript(ctx.out, done)
        except VoxflowError as exc:  # e.g. the catalog lost its segments: the rerun after redoes them
            _add_minutes(ctx, [failed_minutes_row(rec, ctx.settings, ctx.run_id, str(exc))])
            continue
        _minutes_here(rec, transcript, round(done.duration_s * 1000), ctx)


def _minutes_here(rec: Recording, transcript: Transcript, duration_ms: int, ctx: RunContext) -> ChatOutcome:
    """minutes_for in the planning process: rows, claims and notes go straight to the run."""
    res = RESOURCES.get(ctx.run_id, lambda: build_resources(ctx.spec))
    if res.minutes_chat is None or ctx.aborted:
        return ChatOutcome()
    job = MinutesJob(
        rec, transcript, duration_ms, res.minutes_chat, res.budget, ctx.plan.ledger, ctx.settings, ctx.run_id,
        writer_name(ctx.settings),
    )  # fmt: skip
    return _into_run(ctx, minutes_for(job), _add_minutes)


def translate_missing(ctx: RunContext) -> None:
    """The chat translations the plan found missing for recordings already done: each made
    from the transcript in the catalog (no audio, no transcription), in the planning process."""
    for rec, done, targets in ctx.plan.translate:
        if ctx.aborted or interrupts.requested():
            return
        try:
            transcript = load_transcript(ctx.out, done)
        except VoxflowError as exc:  # e.g. the catalog lost its segments: the rerun after redoes them
            _add_translations(ctx, failed_rows(rec, done.language, targets, ctx.settings, ctx.run_id, str(exc)))
            continue
        times = original_cue_times(rec, done.language, ctx.plan.ledger, ctx.settings)
        _translate_here(rec, transcript, round(done.duration_s * 1000), targets, ctx, times)


def _translate_here(
    rec: Recording,
    transcript: Transcript,
    duration_ms: int,
    targets: tuple[str, ...],
    ctx: RunContext,
    original_times: CueTimes | None = None,
) -> ChatOutcome:
    """translate_recording in the planning process: rows, claims and notes go straight to the run."""
    res = RESOURCES.get(ctx.run_id, lambda: build_resources(ctx.spec))
    if res.translator is None or not targets:
        return ChatOutcome()
    job = TranslationJob(
        rec, transcript, duration_ms, targets, res.translator, res.budget, ctx.plan.ledger, ctx.settings,
        ctx.run_id, writer_name(ctx.settings), original_times=original_times,
    )  # fmt: skip
    return _into_run(ctx, translate_recording(job), _add_translations)


def _into_run(
    ctx: RunContext, made: ChatOutcome, add_rows: Callable[[RunContext, Sequence[dict[str, Any]]], None]
) -> ChatOutcome:
    """Chat work done in the planning process, taken into the run: its files' claims, the
    files it left alone, its rows (``add_rows``), and an abort it met."""
    ctx.catalog.add_rows("outputs", [c.row() for w in made.writes for c in w.claims])
    ctx.left_alone.extend(note for w in made.writes for note in w.left_alone)
    add_rows(ctx, made.rows)
    ctx.aborted = ctx.aborted or made.aborted
    return made


def task_failed(rec: Recording, exc: BaseException, ctx: RunContext) -> RecordingResult:
    """The row of a recording whose task raised (an infrastructure fault past its retries):
    the flow records it so the catalog and the manifest still name the recording."""
    result = failed_result(rec, exc, ctx.plan.options_hash, ctx.model, prefix="task failed: ")
    try:
        return _record(ctx, result)
    except Exception:  # the catalog itself is failing: the manifest still lists it
        return result


def _record(ctx: RunContext, result: RecordingResult, on_flushed: Callable[[], None] | None = None) -> RecordingResult:
    ctx.catalog.add_result(result, on_flushed)
    progress.emit("finished", result=result)
    return result


def _write_here(rec: Recording, transcript: Transcript, duration_ms: int, ctx: RunContext) -> SidecarWrites:
    """write_outputs in the planning process: claims and notes go straight to the run."""
    writes = write_outputs(rec, transcript, duration_ms, ctx.plan.ledger, ctx.spec)
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
        return _record(ctx, failed_result(rec, exc, ctx.plan.options_hash, done.model, started))
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
        return _record(ctx, failed_result(twin, NotStarted.after(why), ctx.plan.options_hash, ctx.model, started))
    if leader.status != "done":
        failed = replace(leader, recording=twin, error_message=f"{twin.rel_path}: {leader.error_message}")
        return _record(ctx, failed)
    transcript = Transcript(leader.text, leader.language, leader.segments)
    try:
        writes = _write_here(twin, transcript, leader.duration_ms, ctx)
    except VoxflowError as exc:
        return _record(ctx, failed_result(twin, exc, ctx.plan.options_hash, leader.model, started))
    translated = _translate_here(twin, transcript, leader.duration_ms, targets_for(ctx.settings, leader.language), ctx)
    minutes = _minutes_here(twin, transcript, leader.duration_ms, ctx)
    note = f"same content as {printable_name(leader.recording.rel_path)}: written from its transcript"
    extra = tuple(uri for w in (*translated.writes, *minutes.writes) for uri in w.written)
    twin_result = replace(
        leader,
        recording=twin,
        outputs=tuple(writes.written) + extra,
        warnings=(*leader.warnings, note, *writes.left_alone, *translated.warnings, *minutes.warnings),
        n_chunks=0,
        attempts=0,
        cost_usd=translated.cost_usd + minutes.cost_usd,
        started_at=started,
        finished_at=time.time(),
        worker=where_am_i(),
    )
    return _record(ctx, twin_result)


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
    subtitled: int = 0  # not transcribed: subtitles in the wanted language are already beside them
    translated: int = 0  # --translate-to languages written through chat in this run
    translations_failed: int = 0  # … and those that failed (no sidecars written)
    minutes: int = 0  # --minutes files written in this run
    minutes_failed: int = 0  # … and recordings whose minutes failed (no file written)

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
    plan.ledger.drop_journals(writer_name(ctx.settings), ctx.run_id)
    failed = [r for r in [*plan.failed, *results] if r.status == "failed"]
    manifest = _manifest(ctx, results, failed)
    manifest_uri = write_manifest(ctx.out, ctx.run_id, manifest)
    RESOURCES.drop(ctx.run_id)
    return RunSummary(
        run_id=ctx.run_id,
        done=manifest["counts"]["done"],
        failed=len(failed),
        skipped=len(plan.skipped),
        restored=len(plan.restore),
        not_started=sum(r.error_kind == NotStarted.__name__ for r in failed),
        unsettled=len(plan.unsettled),
        ignored=plan.ignored,
        audio_s=manifest["audio_s"],
        cost_usd=manifest["cost_usd"],
        wall_s=round(time.time() - ctx.started_at, 3),
        aborted=manifest["aborted"],
        failures=manifest["errors"],
        manifest=manifest_uri,
        exit_code=exit_code(
            aborted=ctx.aborted is not None,
            failed=bool(failed or manifest["translations"]["failed"] or manifest["minutes"]["failed"]),
        ),
        deleted=len(plan.deleted),
        interrupted=manifest["interrupted"],
        left_undone=len(manifest["left_undone"]),
        left_alone=manifest["left_alone"],
        known_failures=manifest["known_failures"],
        subtitled=len(plan.subtitled),
        translated=manifest["translations"]["done"],
        translations_failed=manifest["translations"]["failed"],
        minutes=manifest["minutes"]["done"],
        minutes_failed=manifest["minutes"]["failed"],
    )


def _manifest(ctx: RunContext, results: list[RecordingResult], failed: list[RecordingResult]) -> dict[str, Any]:
    """``runs/<run_id>.json``: settings, counts, and every file the run did not do, with why."""
    plan, interrupted = ctx.plan, interrupts.requested()
    done_ids = {r.recording.rel_path for r in [*plan.failed, *results] if r.status == "done"}
    undone = [r.rel_path for r in plan.todo if r.rel_path not in done_ids]
    return {
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
        "cost_usd": round(sum(r.cost_usd for r in results) + _catalog_only_cost(ctx), 6),
        "aborted": f"{ctx.aborted.kind}: {ctx.aborted}" if ctx.aborted else None,
        "interrupted": interrupted,
        "left_undone": undone if ctx.aborted or interrupted else [],
        "errors": [
            *({"file": r.recording.rel_path, "kind": r.error_kind, "message": r.error_message} for r in failed),
            *translation_failures(ctx.translations),
            *minutes_failures(ctx.minutes),
        ],
        "translations": {
            "done": sum(r["status"] == "done" for r in ctx.translations),
            "failed": len(translation_failures(ctx.translations)),
            "from_catalog": len(plan.translate),
        },
        "minutes": {
            "done": sum(r["status"] == "done" for r in ctx.minutes),
            "failed": len(minutes_failures(ctx.minutes)),
            "from_catalog": len(plan.minutes),
            "cost_usd": round(sum(r["cost_usd"] for r in ctx.minutes), 6),
        },
        "unsettled": [r.rel_path for r in plan.unsettled],
        "passed_over": [{"path": p.rel_path, "reason": p.reason} for p in plan.passed_over],
        "deleted": plan.deleted,
        "known_failures": [k.as_dict() for k in plan.known_failures],
        "already_subtitled": [{"file": r.rel_path, "subtitles": path} for r, path in plan.subtitled],
        "skipped": [r.rel_path for r in plan.skipped],
        "left_alone": [*plan.left_alone, *ctx.left_alone],
        "catalog_parts": ctx.catalog.written,
    }


def _catalog_only_cost(ctx: RunContext) -> float:
    """What the translations and minutes made from the catalog cost (the others are in their
    recording's cost)."""
    translated = {rec.recording_id for rec, _, _ in ctx.plan.translate}
    summed = {rec.recording_id for rec, _ in ctx.plan.minutes}
    return sum(r["cost_usd"] for r in ctx.translations if r["recording_id"] in translated) + sum(
        r["cost_usd"] for r in ctx.minutes if r["recording_id"] in summed
    )


def run_inline(plan: RunPlan, run_id: str | None = None, started_at: float | None = None) -> RunSummary:
    """Run a plan without Prefect, one recording after another (no-op runs, tests)."""
    ctx = open_run(plan, run_id, started_at=started_at)
    results = [restore_recording(rec, done, ctx) for rec, done in plan.restore]
    translate_missing(ctx)
    minutes_missing(ctx)
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
