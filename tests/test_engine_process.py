"""The embedded Whisper runs in an engine process of its own (voxflow/engines/process.py),
tested on real `voxflow` processes: the process tree read with psutil, the outcome read back
from the catalog by DuckDB.

Killing the engine process once costs nothing (the call is tried again in a new one); killing
it every time fails the files in flight with a one-line reason, and the run goes on.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import duckdb
import psutil
import pytest

from tests.test_interrupts import CLIPS, Run, alive, distinct_recordings, wait_for

pytestmark = pytest.mark.timeout(600)


def engine_processes(run: Run) -> list[psutil.Process]:
    """The CLI's children started by multiprocessing's spawn: the engine process (not its resource tracker)."""
    found = []
    for child in psutil.Process(run.proc.pid).children():
        try:
            if "spawn_main" in " ".join(child.cmdline()) and alive(child):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def statuses(out: Path) -> dict[str, tuple[str, str | None]]:
    pattern = str(out / "catalog" / "transcripts" / "*.parquet")
    rows = duckdb.sql(f"select source_uri, status, error_message from read_parquet('{pattern}')").fetchall()
    return {Path(uri).name: (status, error) for uri, status, error in rows}


def test_an_engine_process_killed_once_is_replaced_and_every_file_is_done(tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    distinct_recordings(source, copies=1)
    run = Run(["transcribe", str(source), "--out", str(out)], tmp_path / "run")
    try:
        first = wait_for(lambda: engine_processes(run), "the engine process", run)[0]
        wait_for(lambda: list(out.glob(".voxflow/tmp/**/audio.wav")), "a recording in flight", run)
        first.send_signal(signal.SIGKILL)
        second = wait_for(lambda: [p for p in engine_processes(run) if p.pid != first.pid], "a new engine", run)
        assert second
        code = run.wait()
    finally:
        run.stop()
    assert code == 0, run.stderr[-3000:]
    assert "Warning" not in run.stderr, run.stderr[-3000:]  # e.g. the resource tracker's "leaked semaphore"
    assert {status for status, _ in statuses(out).values()} == {"done"}
    assert len(statuses(out)) == len(CLIPS)


def test_an_engine_process_that_keeps_dying_fails_its_files_with_one_line_each(tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    distinct_recordings(source, copies=1)
    run = Run(["transcribe", str(source), "--out", str(out)], tmp_path / "run")
    killing = threading.Event()

    def kill_every_engine() -> None:
        while run.proc.poll() is None:
            for proc in engine_processes(run) if killing.is_set() else []:
                proc.send_signal(signal.SIGKILL)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_every_engine, daemon=True)
    killer.start()
    try:
        wait_for(lambda: list(out.glob(".voxflow/tmp/**/audio.wav")), "a recording in flight", run)
        killing.set()
        code = run.wait()
    finally:
        run.stop()
        killer.join(10)
    assert code == 1, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    rows = statuses(out)
    assert len(rows) == len(CLIPS)
    failed = {name: error for name, (status, error) in rows.items() if status == "failed"}
    assert failed, rows
    assert all("engine's process ended unexpectedly" in (error or "") for error in failed.values()), failed
