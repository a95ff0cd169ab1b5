"""Prefect task for the narration flow: a thin wrapper over voxflow.narrate.

Its inputs are serialisable (the document, the run's NarrationSpec, the book's key) and so is
its result (the document's catalog rows): it runs in a thread of the planning process or in
any worker process of a Dask cluster.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.retry import TASK_RETRIES, TASK_RETRY_DELAY_S, infrastructure_fault
from voxflow import interrupts
from voxflow.narrate import DocumentRef, NarrationSpec, narrate


@task(
    name="narrate-document",
    task_run_name="narrate {doc.display_path}",
    cache_policy=NO_CACHE,
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAY_S,
    retry_condition_fn=infrastructure_fault,
)
def narrate_document_task(doc: DocumentRef, spec: NarrationSpec, book_key: str | None) -> list[dict[str, Any]]:
    """Read, synthesise (chunks cached), assemble and write one book; its catalog rows
    (none when the run was interrupted before the book started)."""
    if interrupts.requested():
        return []
    return narrate(doc, spec, book_key)
