"""Where a flow's tasks run: threads of this process, or a Dask cluster (``--cluster``).

``tcp://HOST:PORT`` connects to a running ``dask scheduler`` (its workers need only the
``voxflow`` package: the task code of ``tasks/`` and ``flows/`` travels by value);
``local:N`` starts N worker processes on this machine for the run and stops them after.
Workers reach the Prefect API at the address this process uses (PREFECT_API_URL travels
with each task), so a remote worker needs that address to be reachable from it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from voxflow.cluster import local_workers
from voxflow.settings import Settings


def task_runner(settings: Settings, threads: int) -> TaskRunner[Any]:
    """The runner for one flow run (enter it with ``with``): ``threads`` items in flight."""
    if not settings.cluster:
        return ThreadPoolTaskRunner(max_workers=threads)
    from prefect_dask import DaskTaskRunner

    _ship_task_code_by_value()
    n_workers = local_workers(settings.cluster)
    if n_workers is None:
        return DaskTaskRunner(address=settings.cluster)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": n_workers,
            "threads_per_worker": max(1, threads // n_workers),
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": ":0",  # a free port: two runs never compete for 8787
        },
    )


def local_threads_per_worker(settings: Settings) -> Settings:
    """With ``local:N``, each of the N processes gets cores/N threads for the embedded engines
    (unless ``--local-threads`` says otherwise)."""
    n_workers = local_workers(settings.cluster or "")
    if not n_workers or "local_threads" in settings.model_fields_set:
        return settings
    return settings.model_copy(update={"local_threads": max(1, (os.cpu_count() or 1) // n_workers)})


def _ship_task_code_by_value() -> None:
    """flows/ and tasks/ are project folders, not installed packages: a Dask worker gets their
    code inside each pickled task (cloudpickle by value) and imports only ``voxflow``."""
    import cloudpickle

    for name in [m for m in sys.modules if m.split(".")[0] in ("flows", "tasks")]:
        cloudpickle.register_pickle_by_value(sys.modules[name])


__all__ = ["local_threads_per_worker", "task_runner"]
