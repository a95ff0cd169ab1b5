"""Prefect task for the transcription flow: a thin wrapper over voxflow.transcribe.

Its inputs are serialisable (the recording, the run's RunSpec) and so is its result: it runs
in a thread of the planning process or in any worker process of a Dask cluster.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.retry import TASK_RETRIES, TASK_RETRY_DELAY_S, infrastructure_fault
from voxflow.models import Recording
from voxflow.transcribe import RecordingOutcome, RunSpec, transcribe_recording


@task(
    name="transcribe-recording",
    task_run_name="transcribe {rec.display_path}",
    cache_policy=NO_CACHE,
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAY_S,
    retry_condition_fn=infrastructure_fault,
)
def transcribe_recording_task(rec: Recording, spec: RunSpec) -> RecordingOutcome:
    """Probe, transcode, transcribe and write one recording's sidecars; its catalog rows come
    back in the outcome (errors become a failed row; no row when the run was interrupted)."""
    return transcribe_recording(rec, spec)
