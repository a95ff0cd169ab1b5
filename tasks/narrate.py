"""Prefect tasks for the narration flow: thin wrappers over voxflow.narration."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from voxflow.errors import RunAbort
from voxflow.narration import DocumentRef, get_narration, narrate


def _infrastructure_fault(task, task_run, state) -> bool:
    """Retry only what is neither a run abort nor a handled per-document error (those come
    back as failed rows, not exceptions)."""
    try:
        state.result()
    except RunAbort:
        return False
    except Exception:
        return True
    return False


@task(
    name="narrate-document",
    task_run_name="narrate {doc.rel_path}",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=_infrastructure_fault,
)
def narrate_document_task(doc: DocumentRef, run_id: str) -> list[dict[str, Any]]:
    """Read, synthesise (chunks cached), assemble and write one book; its catalog rows."""
    return narrate(doc, get_narration(run_id))
