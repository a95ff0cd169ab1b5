"""The transcription flow: scan → for each new recording: transcribe → write → summary.

The work lives in :mod:`voxflow.transcription`; this file is only the plan. One Prefect task
per recording on a bounded thread pool; the chunks of each recording fan out with asyncio
inside its task under one request limit shared by the whole run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture, wait
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.transcribe import restore_sidecars_task, transcribe_recording_task
from voxflow.errors import RunAbort
from voxflow.lock import output_lock
from voxflow.models import Recording, RecordingResult
from voxflow.settings import load_settings
from voxflow.sources import new_run_id
from voxflow.transcription import RunContext, RunPlan, finish_run, open_run, plan_run, task_failed


@flow(name="transcribe", task_runner=ThreadPoolTaskRunner(max_workers=10), log_prints=True)
def transcribe_flow(
    source: str,
    out: str = "voxflow-out",
    options: dict[str, Any] | None = None,
    model: str | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Transcribe every new recording under ``source`` into ``out``.

    ``options`` are voxflow settings (model, language, formats, concurrency, force, …); the API
    key is read from the environment of the process that runs the flow, never passed here.
    ``model``, when given, wins over ``options["model"]`` (a deployment's own parameter).
    One run per output at a time (voxflow.lock): a second one waits (``wait`` option) or fails.
    """
    settings = load_settings(**{**(options or {}), "out": out, **({"model": model} if model else {})})
    run_id = run_id or new_run_id()
    with output_lock(settings, run_id):  # re-entrant: the CLI that started this flow holds it already
        plan = plan_run(source, settings)
        return run_plan(plan, run_id)


def run_plan(plan: RunPlan, run_id: str | None = None) -> dict[str, Any]:
    """Submit the plan's recordings as tasks, wait for all, and finish the run."""
    logger = get_run_logger()
    ctx = open_run(plan, run_id)
    logger.info(
        "run %s: %d to transcribe, %d to restore, %d already done, %d waiting to settle, %d gone from the source, "
        "model %s",
        ctx.run_id,
        len(plan.todo),
        len(plan.restore),
        len(plan.skipped),
        len(plan.unsettled),
        len(plan.deleted),
        ctx.options.model,
    )
    results: list[RecordingResult] = []
    try:
        submitted = [(rec, restore_sidecars_task.submit(rec, ctx.run_id)) for rec, _ in plan.restore]
        submitted += [(rec, transcribe_recording_task.submit(rec, ctx.run_id)) for rec in plan.todo]
        wait([future for _, future in submitted])
        results = [r for rec, future in submitted if (r := _result_of(rec, future, ctx, logger)) is not None]
    finally:  # whatever a task (or Prefect) raised, the catalog is flushed and the manifest written
        summary = finish_run(ctx, results)
    logger.info("run %s finished: %s", ctx.run_id, summary.as_dict())
    return summary.as_dict()


def _result_of(rec: Recording, future: PrefectFuture, ctx: RunContext, logger: Any) -> RecordingResult | None:
    """A task's result; a task that raised (past its retries) becomes a failed row; None
    after a RunAbort (the run records it as aborted)."""
    try:
        return future.result()
    except RunAbort:
        return None
    except Exception as exc:  # an infrastructure fault or a bug: the recording fails, the run goes on
        logger.error("the task for %s failed: %s: %s", rec.rel_path, type(exc).__name__, exc)
        return task_failed(rec, exc, ctx)
