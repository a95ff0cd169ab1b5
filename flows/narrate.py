"""The narration flow: scan → for each changed document: narrate → write → summary.

The work lives in :mod:`voxflow.narrate`; this file is only the plan. One Prefect task per
document, on threads of this process or on a Dask cluster (``cluster`` option, see
flows/runners.py); the chunks of each document fan out with asyncio inside its task. This
process writes the catalog from the tasks' rows. Unchanged books are skipped in the plan,
before any task starts.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import as_completed

from flows.runners import local_threads_per_worker, task_runner
from tasks.narrate import narrate_document_task
from voxflow.errors import RunAbort
from voxflow.narrate import (
    NarrationOptions,
    NarrationPlan,
    document_workers,
    finish_narration,
    open_narration,
    plan_narration,
    record_abort,
    record_rows,
)
from voxflow.settings import load_settings


@flow(name="narrate", log_prints=True)
def narrate_flow(
    source: str,
    out: str = "voxflow-out",
    options: dict[str, Any] | None = None,
    narration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Narrate every new or changed document under ``source`` into audiobooks in ``out``.

    ``options`` are voxflow settings (model, voice, concurrency, cluster, budget_usd, force, …);
    ``narration`` the narration options (per_chapter, formats, instructions, speed, pauses …).
    The API key is read from the environment of each process that runs a task.
    """
    settings = local_threads_per_worker(load_settings(**{**(options or {}), "out": out}))
    plan = plan_narration(source, settings, NarrationOptions.from_dict(narration))
    return run_plan(plan)


def run_plan(plan: NarrationPlan, run_id: str | None = None) -> dict[str, Any]:
    """Submit the plan's documents as tasks, record each one's rows as they come, and finish the run."""
    logger = get_run_logger()
    run = open_narration(plan, run_id)
    logger.info(
        "run %s: %d to narrate, %d unchanged, model %s, on %s",
        run.run_id,
        len(plan.todo),
        len(plan.skipped),
        run.model,
        plan.settings.cluster or "this process",
    )
    try:
        with task_runner(plan.settings, document_workers(plan.settings)) as runner:
            submitted = {
                runner.submit(
                    narrate_document_task, {"doc": doc, "spec": run.spec, "book_key": plan.keys.get(doc.rel_path)}
                ): doc
                for doc in plan.todo
            }
            for future in as_completed(list(submitted)):
                try:
                    record_rows(run, future.result())
                except RunAbort as exc:
                    record_abort(run, submitted[future], exc)
                except Exception as exc:  # an infrastructure fault: finish_narration reports the document
                    logger.error("a narration task failed: %s", exc)
    except BaseException:  # an interrupt or a crash: the manifest still says what happened, then it goes on up
        finish_narration(run)
        raise
    summary = finish_narration(run)
    logger.info(
        "run %s finished: %d done, %d skipped, %d failed, %.1f min of audio, $%.4f (manifest %s)",
        run.run_id,
        summary.done,
        summary.skipped,
        summary.failed,
        summary.audio_s / 60,
        summary.cost_usd,
        summary.manifest,
    )
    return summary.as_dict()


__all__ = ["document_workers", "narrate_flow", "run_plan"]
