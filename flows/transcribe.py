"""The transcription flow: scan → for each new recording: transcribe → write → summary.

The work lives in :mod:`voxflow.transcribe`; this file is only the plan. One Prefect task
per recording, on threads of this process or on a Dask cluster (``cluster`` option, see
flows/runners.py); the chunks of each recording fan out with asyncio inside its task. This
process writes the catalog from the tasks' outcomes, as they finish.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture, as_completed

from flows.runners import local_threads_per_worker, task_runner
from tasks.transcribe import transcribe_recording_task
from voxflow.errors import RunAbort
from voxflow.io.outputs import new_run_id
from voxflow.lock import output_lock
from voxflow.models import Recording, RecordingResult
from voxflow.settings import load_settings
from voxflow.transcribe import (
    RunContext,
    RunPlan,
    finish_run,
    minutes_missing,
    open_run,
    plan_run,
    record_outcome,
    restore_recording,
    task_failed,
    translate_missing,
)


@flow(name="transcribe", log_prints=True)
def transcribe_flow(
    source: str,
    out: str = "voxflow-out",
    options: dict[str, Any] | None = None,
    model: str | None = None,
    run_id: str | None = None,
    started_at: float | None = None,
) -> dict[str, Any]:
    """Transcribe every new recording under ``source`` into ``out``.

    ``options`` are voxflow settings (model, language, formats, concurrency, cluster, force, …);
    the API key is read from the environment of each process that runs a task, never passed here.
    ``model``, when given, wins over ``options["model"]`` (a deployment's own parameter).
    One run per output at a time (voxflow.lock): a second one waits (``wait`` option) or fails.
    ``started_at`` (epoch seconds): when the command that started this flow started, so the
    run's manifest and report count its start-up too; default, now.
    """
    settings = load_settings(**{**(options or {}), "out": out, **({"model": model} if model else {})})
    run_id = run_id or new_run_id()
    with output_lock(settings, run_id):  # re-entrant: the CLI that started this flow holds it already
        plan = plan_run(source, local_threads_per_worker(settings))
        return run_plan(plan, run_id, started_at)


def run_plan(plan: RunPlan, run_id: str | None = None, started_at: float | None = None) -> dict[str, Any]:
    """Submit the plan's recordings as tasks, restore moved ones meanwhile, record each outcome
    as it comes, and finish the run."""
    logger = get_run_logger()
    ctx = open_run(plan, run_id, started_at=started_at)
    logger.info(
        "run %s: %d to transcribe, %d to restore, %d already done, %d waiting to settle, %d gone from the source, "
        "model %s, on %s",
        ctx.run_id,
        len(plan.todo),
        len(plan.restore),
        len(plan.skipped),
        len(plan.unsettled),
        len(plan.deleted),
        ctx.model,
        ctx.settings.cluster or "this process",
    )
    results: list[RecordingResult] = []
    try:
        with task_runner(ctx.settings, ctx.settings.recording_workers) as runner:
            submitted = {
                runner.submit(transcribe_recording_task, {"rec": rec, "spec": ctx.spec}): rec for rec in plan.todo
            }
            results += [restore_recording(rec, done, ctx) for rec, done in plan.restore]
            translate_missing(ctx)
            minutes_missing(ctx)
            for future in as_completed(list(submitted)):
                if (result := _result_of(submitted[future], future, ctx, logger)) is not None:
                    results.append(result)
    finally:  # whatever a task (or Prefect) raised, the catalog is flushed and the manifest written
        summary = finish_run(ctx, results)
    logger.info("run %s finished: %s", ctx.run_id, summary.as_dict())
    return summary.as_dict()


def _result_of(rec: Recording, future: PrefectFuture[Any], ctx: RunContext, logger: Any) -> RecordingResult | None:
    """A task's outcome recorded; a task that raised (past its retries) becomes a failed row;
    None after a RunAbort (the run records it as aborted) or an interrupt."""
    try:
        return record_outcome(ctx, future.result())
    except RunAbort as exc:
        ctx.aborted = ctx.aborted or exc
        return None
    except Exception as exc:  # an infrastructure fault or a bug: the recording fails, the run goes on
        logger.error("the task for %s failed: %s: %s", rec.display_path, type(exc).__name__, exc)
        return task_failed(rec, exc, ctx)
