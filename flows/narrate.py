"""The narration flow: scan → for each changed document: narrate → write → summary.

The work lives in :mod:`voxflow.narration`; this file is only the plan. One Prefect task per
document on a bounded thread pool; the chunks of each document fan out with asyncio inside
its task under one request limit shared by the whole run. Unchanged books are skipped in the
plan, before any task starts.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.narrate import narrate_document_task
from voxflow.errors import RunAbort
from voxflow.narration import (
    NarrationOptions,
    NarrationPlan,
    document_workers,
    finish_narration,
    open_narration,
    plan_narration,
)
from voxflow.settings import load_settings


@flow(name="narrate", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
def narrate_flow(
    source: str,
    out: str = "voxflow-out",
    options: dict[str, Any] | None = None,
    narration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Narrate every new or changed document under ``source`` into audiobooks in ``out``.

    ``options`` are voxflow settings (model, voice, concurrency, budget_usd, force, …);
    ``narration`` the narration options (per_chapter, formats, instructions, speed, pauses …).
    The API key is read from the environment of the process that runs the flow.
    """
    settings = load_settings(**{**(options or {}), "out": out})
    plan = plan_narration(source, settings, NarrationOptions.from_dict(narration))
    return run_plan(plan)


def run_plan(plan: NarrationPlan, run_id: str | None = None) -> dict[str, Any]:
    """Submit the plan's documents as tasks, wait for all, and finish the run."""
    logger = get_run_logger()
    run = open_narration(plan, run_id)
    logger.info(
        "run %s: %d to narrate, %d unchanged, model %s",
        run.run_id,
        len(plan.todo),
        len(plan.skipped),
        run.synth.model,
    )
    try:
        futures = [narrate_document_task.submit(doc, run.run_id) for doc in plan.todo]
        wait(futures)
        for future in futures:  # resolve every future; rows are collected by the run itself
            try:
                future.result()
            except RunAbort:
                continue
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


def bounded(settings_workers: int) -> Any:
    """The flow with its thread pool bounded to ``settings_workers`` documents at once."""
    return narrate_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=settings_workers))


__all__ = ["bounded", "document_workers", "narrate_flow", "run_plan"]
