"""Prefect tasks for the transcription flow: thin wrappers over voxflow.transcription."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from voxflow.errors import RunAbort
from voxflow.models import Recording, RecordingResult
from voxflow.transcription import get_run, restore_recording, transcribe_recording


def _infrastructure_fault(task, task_run, state) -> bool:
    """Retry only what is neither a run abort nor a handled per-file error."""
    try:
        state.result()
    except RunAbort:
        return False
    except Exception:
        return True
    return False


@task(
    name="transcribe-recording",
    task_run_name="transcribe {rec.rel_path}",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=_infrastructure_fault,
)
def transcribe_recording_task(rec: Recording, run_id: str) -> RecordingResult:
    """Probe, transcode, transcribe and write one recording (errors become a failed row)."""
    return transcribe_recording(rec, get_run(run_id))


@task(name="restore-sidecars", task_run_name="restore {rec.rel_path}", cache_policy=NO_CACHE)
def restore_sidecars_task(rec: Recording, run_id: str) -> RecordingResult:
    """Write sidecars of an already-transcribed recording from the catalog."""
    ctx = get_run(run_id)
    done = dict((r.rel_path, d) for r, d in ctx.plan.restore)[rec.rel_path]
    return restore_recording(rec, done, ctx)
