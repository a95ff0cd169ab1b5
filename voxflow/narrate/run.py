"""A narration run: the serialisable spec each task gets, this process's resources (voice
engine, limits), and the planning process's side: rows into the catalog, the manifest, the
exit code. ``run_inline`` runs a plan without Prefect (no-op runs, tests)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from voxflow import interrupts, scratch
from voxflow.cluster import request_limiter, where_am_i
from voxflow.engines.base import SpeechAudio, SynthesisOptions, Synthesizer, get_synthesizer
from voxflow.engines.base import is_local as is_local_model
from voxflow.errors import AudioError, NotStarted, RunAbort, SourceError
from voxflow.fsnames import printable_name
from voxflow.io.catalog import CatalogWriter
from voxflow.io.outputs import OutputTree, new_run_id
from voxflow.io.storage import resolve
from voxflow.limits import Budget, RequestLimiter
from voxflow.narrate.corpus import DocumentRef
from voxflow.narrate.job import failed_row, name_columns, narrate_document, utc_now
from voxflow.narrate.options import NarrationOptions
from voxflow.narrate.plan import NarrationPlan
from voxflow.narrate.prepare import DEFAULT_MAX_CHARS
from voxflow.narrate.synthesis import SynthStats
from voxflow.runs import PerProcess, exit_code, write_manifest
from voxflow.settings import Settings


@dataclass(frozen=True)
class NarrationSpec:
    """What every task of a narration run gets besides its document, serialisable (no
    secrets, nothing open): a worker process builds its own engine and limits from it."""

    run_id: str
    settings: Settings
    options: NarrationOptions


@dataclass
class NarrationResources:
    """What the documents of one run share within one process (voice engine, limits)."""

    out: OutputTree
    synth: Synthesizer
    limiter: RequestLimiter
    budget: Budget
    aborted: RunAbort | None = None  # set by the first document that aborts: the rest do not start


_RESOURCES: PerProcess[NarrationResources] = PerProcess()


def resources_for(spec: NarrationSpec, synth: Synthesizer | None = None, *, prepare: bool = True) -> NarrationResources:
    """This process's resources for the run: built on first use (an OpenRouter engine checks
    key, model and voice first: an unknown model or voice aborts before any document)."""

    def build() -> NarrationResources:
        settings = spec.settings
        engine = synth or get_synthesizer(settings)
        if prepare:
            asyncio.run(_prepared(engine))
        remote = not is_local_model(settings.speech_model)
        return NarrationResources(
            out=OutputTree(settings.out),
            synth=engine,
            limiter=request_limiter(settings.concurrency, spec.run_id, remote=remote),
            budget=Budget(settings.budget_usd),
        )

    return _RESOURCES.get(spec.run_id, build)


@dataclass
class NarrationRun:
    """What the planning process keeps for a run: the plan, the catalog writer, the rows."""

    spec: NarrationSpec
    plan: NarrationPlan
    out: OutputTree
    catalog: CatalogWriter
    started_at: float = field(default_factory=time.time)
    aborted: RunAbort | None = None
    results: list[list[dict[str, Any]]] = field(default_factory=list)  # rows per narrated document

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def model(self) -> str:
        return self.plan.model


def open_narration(plan: NarrationPlan, run_id: str | None = None, synth: Synthesizer | None = None) -> NarrationRun:
    """Start a run: this process builds its own resources now when there is work (a bad key,
    model or voice stops the run before any task); other processes build theirs from the spec."""
    spec = NarrationSpec(run_id or new_run_id(), plan.settings, plan.options)
    out = OutputTree(plan.settings.out)
    scratch.sweep(out)  # what runs killed earlier left behind
    if plan.has_work or synth is not None:
        resources_for(spec, synth, prepare=synth is None)
    return NarrationRun(spec=spec, plan=plan, out=out, catalog=CatalogWriter(out, spec.run_id, writer="n0"))


async def _prepared(synth: Synthesizer) -> None:
    try:
        await synth.prepare()
    finally:
        with contextlib.suppress(Exception):
            await synth.aclose()


def narrate(doc: DocumentRef, spec: NarrationSpec, book_key: str | None = None) -> list[dict[str, Any]]:
    """Narrate one planned document wherever the task runs; its rows (the planning process
    writes them to the catalog). Raises RunAbort, which stops the run."""
    res = resources_for(spec)
    if res.aborted is not None:
        return [_run_failure_row(doc, spec, res.synth.model, NotStarted.after(res.aborted))]
    try:
        return narrate_document(
            doc.uri,
            spec.settings,
            res.out,
            res.synth,
            res.limiter,
            res.budget,
            spec.run_id,
            rel_path=doc.rel_path,
            book_key=book_key,
            options=spec.options,
        )
    except RunAbort as exc:
        res.aborted = res.aborted or exc
        raise


def record_rows(run: NarrationRun, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """In the planning process: a document's rows into the catalog and the run's results."""
    run.catalog.add_rows("narrations", rows)
    run.results.append(rows)
    return rows


def record_abort(run: NarrationRun, doc: DocumentRef, exc: RunAbort) -> None:
    """In the planning process: the document whose task aborted the run gets its row."""
    run.aborted = run.aborted or exc
    record_rows(run, [_run_failure_row(doc, run.spec, run.model, exc, "aborted: ")])


def _run_failure_row(
    doc: DocumentRef, spec: NarrationSpec, model: str, exc: BaseException, prefix: str = ""
) -> dict[str, Any]:
    """The row of a document the run's abort stopped (before or while narrating it)."""
    row = failed_row(
        doc.uri, doc.rel_path, model, spec.settings.voice, spec.run_id, exc, utc_now(), SynthStats(), prefix=prefix
    )
    return {**row, "worker": where_am_i()}


@dataclass
class NarrationSummary:
    run_id: str
    documents: int
    done: int
    failed: int
    skipped: int
    not_started: int
    chapters: int
    audio_s: float
    cost_usd: float
    wall_s: float
    aborted: str | None
    failures: list[dict[str, Any]]
    books: list[dict[str, Any]]
    manifest: str
    exit_code: int
    interrupted: bool = False  # Ctrl-C / SIGTERM: stopped starting work (exit 130)
    left_undone: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def finish_narration(run: NarrationRun, results: Sequence[Sequence[dict[str, Any]]] | None = None) -> NarrationSummary:
    """Flush the catalog, write the run manifest (with each file's mastering report), and
    say how the run went (exit code per design §3). ``results`` defaults to every document
    :func:`narrate` handled in this run (an aborted one included)."""
    plan = run.plan
    given = list(run.results if results is None else results)
    results = [*given, *_rows_of_lost_tasks(run, given)]
    for doc, rows in plan.skipped:
        for row in rows:
            row.update(run_id=run.run_id, **name_columns(doc.uri, doc.rel_path))
        run.catalog.add_rows("narrations", rows)
    run.catalog.flush()
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for rows in [*results, *(rows for _d, rows in plan.skipped)]:
        for row in rows:
            by_doc.setdefault(row["rel_path"], []).append(row)
    done_paths = {p for p, rows in by_doc.items() if rows and rows[0]["status"] == "done"}
    failed = [rows[0] for rows in by_doc.values() if rows and rows[0]["status"] == "failed"]
    books = [_book_summary(rel, rows) for rel, rows in sorted(by_doc.items())]
    new_rows = [r for rows in results for r in rows]
    manifest = _manifest(run, done_paths, failed, books, new_rows)
    manifest_uri = write_manifest(run.out, run.run_id, manifest)
    _RESOURCES.drop(run.run_id)
    return NarrationSummary(
        run_id=run.run_id,
        documents=plan.found,
        done=len(done_paths),
        failed=len(failed),
        skipped=len(plan.skipped),
        not_started=sum(r["error_kind"] == NotStarted.__name__ for r in failed),
        chapters=sum(1 for r in new_rows if r["status"] == "done"),
        audio_s=manifest["audio_s"],
        cost_usd=manifest["cost_usd"],
        wall_s=round(time.time() - run.started_at, 3),
        aborted=manifest["aborted"],
        failures=manifest["errors"],
        books=books,
        manifest=manifest_uri,
        exit_code=exit_code(aborted=run.aborted is not None, failed=bool(failed)),
        interrupted=manifest["interrupted"],
        left_undone=len(manifest["left_undone"]),
    )


def _rows_of_lost_tasks(run: NarrationRun, results: Sequence[Sequence[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """A failed row (into the catalog) for each planned document whose task died before it
    returned rows — none after an interrupt (those are left undone)."""
    if interrupts.requested():
        return []
    handled = {row["rel_path"] for rows in results for row in rows}
    lost = []
    for doc in run.plan.todo:
        if printable_name(doc.rel_path) in handled:
            continue
        reason = (
            NotStarted.after(run.aborted)
            if run.aborted
            else RuntimeError("the task ended without a result (see the flow's logs)")
        )
        rows = [failed_row(doc.uri, doc.rel_path, run.model, run.plan.settings.voice, run.run_id, reason,
                           utc_now(), SynthStats())]  # fmt: skip
        run.catalog.add_rows("narrations", rows)
        lost.append(rows)
    return lost


def _book_summary(rel: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    head = rows[0]
    return {
        "file": rel,
        "status": head["status"],
        "title": head.get("book_title"),
        "chapters": len(rows) if head["status"] != "failed" else 0,
        "duration_s": round(sum(r["duration_s"] or 0 for r in rows), 3),
        "cost_usd": round(sum(r["cost_usd"] or 0 for r in rows), 6),
        "mastering_passed": head.get("mastering_passed"),
        "outputs": head.get("outputs") or [],
        "error": head.get("error_message"),
    }


def _manifest(
    run: NarrationRun,
    done_paths: set[str],
    failed: list[dict[str, Any]],
    books: list[dict[str, Any]],
    new_rows: list[dict[str, Any]],
) -> dict[str, Any]:
    plan, interrupted = run.plan, interrupts.requested()
    undone = [printable_name(d.rel_path) for d in plan.todo if printable_name(d.rel_path) not in done_paths]
    return {
        "run_id": run.run_id,
        "kind": "narrate",
        "source": plan.source,
        "settings": plan.settings.public_dict(),
        "narration": plan.options.as_dict(),
        "model": run.model,
        "started_at": run.started_at,
        "finished_at": time.time(),
        "counts": {
            "found": plan.found,
            "done": len(done_paths),
            "skipped": len(plan.skipped),
            "failed": len(failed),
            "ignored": plan.ignored,
        },
        "audio_s": round(sum(r["duration_s"] or 0 for r in new_rows if r["status"] == "done"), 3),
        "cost_usd": round(sum(r["cost_usd"] or 0 for r in new_rows), 6),
        "aborted": f"{run.aborted.kind}: {run.aborted}" if run.aborted else None,
        "interrupted": interrupted,
        "left_undone": undone if run.aborted or interrupted else [],
        "errors": [{"file": r["rel_path"], "kind": r["error_kind"], "message": r["error_message"]} for r in failed],
        "books": books,
        "mastering": _mastering_reports(run.out, books),
        "catalog_parts": run.catalog.written,
    }


def _mastering_reports(out: OutputTree, books: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each book's per-file mastering report, from its report.json."""
    reports = []
    for book in books:
        for uri in book["outputs"]:
            if uri.endswith(".report.json"):
                with contextlib.suppress(OSError, ValueError, SourceError):
                    fs, path = resolve(uri)
                    data = json.loads(fs.cat_file(path))
                    reports.append({"file": book["file"], "files": data.get("mastering", [])})
    return reports


def run_inline(plan: NarrationPlan, run_id: str | None = None, synth: Synthesizer | None = None) -> NarrationSummary:
    """Run a plan without Prefect, one document after another (no-op runs, tests)."""
    run = open_narration(plan, run_id, synth)
    for doc in plan.todo:
        try:
            record_rows(run, narrate(doc, run.spec, plan.keys.get(doc.rel_path)))
        except RunAbort as exc:  # the rest come back as "not started" rows
            record_abort(run, doc, exc)
    return finish_narration(run)


class _NullSynth(Synthesizer):
    """The engine of a run with nothing to synthesise: no model loaded, no key checked."""

    max_input_chars = DEFAULT_MAX_CHARS

    def __init__(self, model: str) -> None:
        self.model = model

    async def synthesise(self, text: str, options: SynthesisOptions) -> SpeechAudio:
        raise AudioError("no engine in a run without work")


def document_workers(settings: Settings) -> int:
    """Documents in flight at once: the CPU-bound local voice gains nothing from many."""
    if settings.workers:
        return settings.workers
    return 2 if is_local_model(settings.speech_model) else min(settings.concurrency, 16)
