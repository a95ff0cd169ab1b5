"""Scratch folders a run owns, and the sweep that removes those of runs that died.

A run keeps its temporary audio in one folder of its own::

    local output   OUT/.voxflow/tmp/<run_id>/
    bucket output  $VOXFLOW_TMP_DIR (or the system temp folder)/voxflow-<run_id>/

and a book is assembled in ``OUT/.voxflow/work/<key>-*/``. Each such folder holds
``owner.json``: the pid and start time of the process that made it. A run that ends removes
its own; a run killed with ``kill -9`` cannot, so every run first sweeps the folders whose
owner is gone (a pid that no longer exists, or now belongs to a younger process). Folders of
a live run — two runs at once on one tree — are left alone, and so is a folder without an
owner file younger than :data:`UNCLAIMED_GRACE_S` (its run may be between creating and
claiming it).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import psutil

from voxflow.io.outputs import OutputTree

OWNER_FILE = "owner.json"
UNCLAIMED_GRACE_S = 24 * 3600
BUCKET_PREFIX = "voxflow-"


def claim(folder: Path) -> Path:
    """Create ``folder`` (if needed) and record this process as its owner."""
    folder.mkdir(parents=True, exist_ok=True)
    me = psutil.Process()
    (folder / OWNER_FILE).write_text(json.dumps({"pid": me.pid, "started": me.create_time()}))
    return folder


def run_scratch(out: OutputTree, run_id: str) -> Path:
    """The run's own scratch folder (created and claimed on first use)."""
    local = out.state_dir() / "tmp" / run_id
    folder = local if out.local else _bucket_scratch_base() / f"{BUCKET_PREFIX}{run_id}"
    return folder if (folder / OWNER_FILE).exists() else claim(folder)


def release(folder: Path | None) -> None:
    """Remove a scratch folder this run is done with."""
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def sweep(out: OutputTree) -> list[Path]:
    """Remove the scratch and work folders of runs that are no longer alive; returns them."""
    removed = []
    for folder in _candidates(out):
        if _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _candidates(out: OutputTree) -> list[Path]:
    folders: list[Path] = []
    if out.local:
        for kind in ("tmp", "work"):
            base = out.state_dir() / kind
            folders += [p for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
    base = _bucket_scratch_base()
    if base.is_dir():  # only claimed ones: other programs use the system temp folder too
        folders += [p for p in base.glob(f"{BUCKET_PREFIX}*") if (p / OWNER_FILE).is_file()]
    return folders


def _abandoned(folder: Path) -> bool:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
    except FileNotFoundError:
        try:
            return time.time() - folder.stat().st_mtime > UNCLAIMED_GRACE_S
        except OSError:
            return False
    except (OSError, ValueError):
        return True
    return not _alive(int(owner.get("pid", 0)), float(owner.get("started", 0.0)))


def _alive(pid: int, started: float) -> bool:
    """True when ``pid`` runs and is the same process that claimed the folder."""
    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - started) < 1.0 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.AccessDenied:
        return True
    except (psutil.NoSuchProcess, ValueError):
        return False


def _bucket_scratch_base() -> Path:
    return Path(os.environ.get("VOXFLOW_TMP_DIR") or tempfile.gettempdir())


__all__ = ["claim", "release", "run_scratch", "sweep"]
