"""The transcription job in plain Python (no Prefect); ``flows/transcribe.py`` orchestrates it.

plan     scan → hash (cached by size+mtime) → skip what the catalog has done with the same
         content, model and options; restore sidecars of moved files from the catalog.
job      one recording's task (runs wherever the task runs): probe → 16 kHz mono WAV + pauses
         → chunks (voxflow.transcribe.chunks) → stitch → sidecars (voxflow.transcribe.outputs)
         → a RecordingOutcome.
run      in the planning process: outcomes into the catalog, twins, restores, the manifest.
align    timings for engines that answer with text only.
"""

from voxflow.transcribe.job import RecordingOutcome, RunSpec, resources_for, transcribe_recording
from voxflow.transcribe.plan import RunPlan, plan_run
from voxflow.transcribe.run import (
    RunContext,
    RunSummary,
    finish_run,
    minutes_missing,
    open_run,
    record_outcome,
    restore_recording,
    run_inline,
    task_failed,
    translate_missing,
)

__all__ = [
    "RecordingOutcome",
    "RunContext",
    "RunPlan",
    "RunSpec",
    "RunSummary",
    "finish_run",
    "minutes_missing",
    "open_run",
    "plan_run",
    "record_outcome",
    "resources_for",
    "restore_recording",
    "run_inline",
    "task_failed",
    "transcribe_recording",
    "translate_missing",
]
