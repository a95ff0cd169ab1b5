"""The one Prefect retry rule of voxflow's tasks.

HTTP retries live inside the engines (tenacity); per-item errors come back as failed rows.
What still escapes a task is an infrastructure fault (a killed ffmpeg, a full disk, a lost
connection to the Prefect API): worth one more try — unless it is a run abort (bad key, no
credits, unknown model, budget), which must stop the run at once.
"""

from __future__ import annotations

from typing import Any

from voxflow.errors import RunAbort

TASK_RETRIES = 1
TASK_RETRY_DELAY_S = 2


def infrastructure_fault(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry anything but a RunAbort."""
    try:
        state.result()
    except RunAbort:
        return False
    except Exception:
        return True
    return False
