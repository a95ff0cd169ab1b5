"""Prefect tasks for the transcription flow: thin wrappers over voxflow.transcription."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.retry import TASK_RETRIES, TASK_RETRY_DELAY_S, infrastructure_fault
from voxflow.models import Recording, RecordingResult
from voxflow.transcription import get_run, restore_recording, transcribe_recording


@task(
    name="transcribe-recording",
    task_run_name="transcribe {rec.display_path}",
    cache_policy=NO_CACHE,
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAY_S,
    retry_condition_fn=infrastructure_fault,
)
def transcribe_recording_task(rec: Recording, run_id: str) -> RecordingResult | None:
    """Probe, transcode, transcribe and write one recording (errors become a failed row;
    None when the run was interrupted first)."""
    return transcribe_recording(rec, get_run(run_id))


@task(name="restore-sidecars", task_run_name="restore {rec.display_path}", cache_policy=NO_CACHE)
def restore_sidecars_task(rec: Recording, run_id: str) -> RecordingResult:
    """Write sidecars of an already-transcribed recording from the catalog."""
    ctx = get_run(run_id)
    done = dict((r.rel_path, d) for r, d in ctx.plan.restore)[rec.rel_path]
    return restore_recording(rec, done, ctx)
