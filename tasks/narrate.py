"""Prefect tasks for the narration flow: thin wrappers over voxflow.narration."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.retry import TASK_RETRIES, TASK_RETRY_DELAY_S, infrastructure_fault
from voxflow import interrupts
from voxflow.narration import DocumentRef, get_narration, narrate


@task(
    name="narrate-document",
    task_run_name="narrate {doc.rel_path}",
    cache_policy=NO_CACHE,
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAY_S,
    retry_condition_fn=infrastructure_fault,
)
def narrate_document_task(doc: DocumentRef, run_id: str) -> list[dict[str, Any]]:
    """Read, synthesise (chunks cached), assemble and write one book; its catalog rows
    (none when the run was interrupted before the book started)."""
    if interrupts.requested():
        return []
    return narrate(doc, get_narration(run_id))
