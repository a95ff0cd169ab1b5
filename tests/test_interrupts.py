"""Interrupts and leftovers, tested on real `voxflow` processes.

Ctrl-C (SIGINT to the process group, as a terminal sends it) and SIGTERM (systemd, cron):
the run stops starting work, writes a manifest marked interrupted, prints its summary and
exits 130 without a traceback; a rerun does only what is left. ``kill -9``: nothing of the run
survives it (Prefect's temporary server included), and the next finished run removes the
temporary audio and assembly folders it left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import psutil
import pytest

from tests.conftest import ROOT, SAMPLES, ffmpeg

CLIPS = ("jfk.flac", "beckett.wav", "spk1_snt1.wav", "spk1_snt3.wav")
WAIT_S = 240  # generous: 9 agents share 2 cores here; an idle run takes 20-40 s


class Run:
    """One `voxflow …` process in its own process group, output captured to files."""

    def __init__(self, args: list[str], folder: Path, env: dict[str, str] | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = folder / "stdout.txt", folder / "stderr.txt"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxflow.cli", *args],
            cwd=ROOT,
            env={**os.environ, "VOXFLOW_WORKERS": "1", **(env or {})},
            stdout=self.stdout_path.open("wb"),
            stderr=self.stderr_path.open("wb"),
            start_new_session=True,
        )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self) -> int:
        return self.proc.wait(timeout=WAIT_S)

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for(condition: Callable[[], object], what: str, run: Run | None = None) -> object:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if run is not None and run.proc.poll() is not None:
            pytest.fail(f"voxflow exited ({run.proc.returncode}) before {what}:\n{run.stderr[-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def distinct_recordings(folder: Path, copies: int = 2) -> list[Path]:
    """Sample clips, each also with a few ms of silence appended (distinct content)."""
    folder.mkdir(parents=True)
    made = []
    for name in CLIPS:
        stem, ext = name.rsplit(".", 1)
        for n in range(copies):
            target = folder / f"{stem}-{n}.{ext}"
            if n == 0:
                shutil.copy(SAMPLES / name, target)
            else:
                ffmpeg("-i", str(SAMPLES / name), "-af", f"apad=pad_dur=0.0{n}", str(target))
            made.append(target)
    return made


def manifest(out: Path, run_id: str | None = None) -> dict:
    files = sorted((out / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(files[-1].read_text())


def done_rows(out: Path) -> list[tuple[str, int]]:
    """(source_uri, done rows) per recording, read back by DuckDB."""
    pattern = str(out / "catalog" / "transcripts" / "*.parquet")
    query = f"select source_uri, count(*) from read_parquet('{pattern}') where status = 'done' group by 1"
    return duckdb.sql(query).fetchall()


def sidecars(out: Path) -> list[Path]:
    return [p for p in out.rglob("*.srt") if ".voxflow" not in p.parts]


def stop_as(how: str, run: Run) -> None:
    """Send the stop signal(s) ``how`` names, as the terminal, cron or systemd would."""
    if how == "SIGINT":
        os.killpg(run.proc.pid, signal.SIGINT)  # Ctrl-C reaches every process of the terminal's group …
        run.proc.send_signal(signal.SIGINT)  # … and `uv run` / `./dev voxflow` forward a copy: two signals
    elif how == "SIGTERM":
        run.proc.send_signal(signal.SIGTERM)  # cron, systemd's KillMode=mixed: the main process
    else:  # systemd's default KillMode=control-group: every process of the unit, server included
        for proc in [psutil.Process(run.proc.pid), *run.descendants()]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGTERM)


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGTERM-to-all"])
def test_first_signal_finishes_in_flight_writes_manifest_and_exits_130(tmp_path: Path, how: str) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    recordings = distinct_recordings(source)
    run = Run(["transcribe", str(source), "--out", str(out)], tmp_path / "run1")
    try:
        wait_for(lambda: sidecars(out), "the first recording's sidecars", run)
        stop_as(how, run)
        code = run.wait()
    finally:
        run.stop()
    assert code == 130, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert "interrupted" in run.stderr  # the summary says so
    first = manifest(out)
    assert first["interrupted"] is True
    assert 1 <= first["counts"]["done"] < len(recordings)
    assert len(first["left_undone"]) == len(recordings) - first["counts"]["done"] - first["counts"]["failed"]
    assert first["counts"]["failed"] == 0
    assert len(done_rows(out)) == first["counts"]["done"]  # finished recordings are in the catalog

    rerun = Run(["transcribe", str(source), "--out", str(out)], tmp_path / "run2")
    try:
        assert rerun.wait() == 0, rerun.stderr[-3000:]
    finally:
        rerun.stop()
    second = manifest(out)
    assert second["counts"]["done"] == len(recordings) - first["counts"]["done"]
    assert second["counts"]["skipped"] == first["counts"]["done"]
    rows = done_rows(out)
    assert len(rows) == len(recordings) and all(count == 1 for _uri, count in rows)


def test_second_ctrl_c_exits_at_once(tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    distinct_recordings(source)
    run = Run(["transcribe", str(source), "--out", str(out)], tmp_path / "run1")
    try:
        wait_for(lambda: sidecars(out), "the first recording's sidecars", run)
        os.killpg(run.proc.pid, signal.SIGINT)
        wait_for(lambda: "stopping" in run.stderr, "the first Ctrl-C to be acknowledged", run)
        time.sleep(0.4)  # a second, deliberate press (copies of one press arrive within milliseconds)
        os.killpg(run.proc.pid, signal.SIGINT)
        code = run.wait()
    finally:
        run.stop()
    assert code == 130
    assert "Traceback" not in run.stderr


def prefect_servers(processes: list[psutil.Process]) -> list[tuple[psutil.Process, int]]:
    """(process, port) of each Prefect server (uvicorn serving Prefect's app) among ``processes``."""
    found = []
    for proc in processes:
        cmd = proc.cmdline()
        if "prefect.server.api.server:create_app" in cmd:
            found.append((proc, int(cmd[cmd.index("--port") + 1])))
    return found


def port_holders(port: int) -> list[str]:
    """The processes listening on ``port`` (pid and command), whoever they are."""
    holders = []
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            holders.append(f"pid {conn.pid}: {command_of(conn.pid)}")
    return holders


def command_of(pid: int | None) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline()[:4]) if pid else "?"
    except psutil.Error as exc:  # a zombie main thread whose other threads still exit
        return type(exc).__name__


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_and_check_nothing_survives(run: Run, before_kill: list[psutil.Process]) -> None:
    """SIGKILL the run; within 15 s none of ``before_kill`` runs and no server port listens.

    The port is waited for, not only the processes: a killed process's main thread shows as a
    zombie while its other threads still exit (one in a disk write finishes it first), and its
    sockets close with the last of them."""
    servers = prefect_servers(before_kill)
    assert servers, "the run had no temporary Prefect server to check"
    run.proc.kill()
    run.proc.wait()

    def leftovers() -> tuple[list[psutil.Process], list[str]]:
        return [p for p in before_kill if alive(p)], [h for _proc, port in servers for h in port_holders(port)]

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(leftovers()):
        time.sleep(0.1)
    survivors, listening = leftovers()
    try:
        assert not survivors, [p.cmdline()[:4] for p in survivors]
        assert not listening, f"still listening 15 s after the kill: {listening}"
    finally:
        for proc in survivors:
            proc.kill()


def test_kill_9_mid_recording_leaves_no_process_and_next_run_sweeps(tmp_path: Path) -> None:
    source, out, system_tmp = tmp_path / "in", tmp_path / "out", tmp_path / "systmp"
    system_tmp.mkdir()
    distinct_recordings(source, copies=1)
    env = {"TMPDIR": str(system_tmp)}

    def temp_audio() -> list[Path]:
        return [*out.glob(".voxflow/tmp/**/audio.wav"), *system_tmp.glob("voxflow-*/audio.wav")]

    run = Run(["transcribe", str(source), "--out", str(out)], tmp_path / "run1", env)
    try:
        wait_for(temp_audio, "a recording in flight", run)
        kill_and_check_nothing_survives(run, run.descendants())
    finally:
        run.stop()
    assert temp_audio()  # what the killed run left

    rerun = Run(["transcribe", str(source), "--out", str(out)], tmp_path / "run2", env)
    try:
        assert rerun.wait() == 0, rerun.stderr[-3000:]
    finally:
        rerun.stop()
    assert not temp_audio()
    assert not list(system_tmp.glob("voxflow-*")) and not list(out.glob(".voxflow/tmp/*"))
    assert len(done_rows(out)) == len(CLIPS)


def test_kill_9_mid_assembly_leaves_no_process_and_next_run_sweeps(tmp_path: Path) -> None:
    source, out = tmp_path / "books", tmp_path / "out"
    source.mkdir()
    shutil.copy(ROOT / "sample_data" / "texts" / "aesop-fables.md", source / "aesop-fables.md")

    def assembling() -> list[Path]:
        return [p for p in out.glob(".voxflow/work/*/*") if p.suffix in (".wav", ".mp3")]

    run = Run(["narrate", str(source), "--out", str(out)], tmp_path / "run1")
    try:
        wait_for(assembling, "the book's assembly", run)
        kill_and_check_nothing_survives(run, run.descendants())
    finally:
        run.stop()
    assert list(out.glob(".voxflow/work/*"))  # the killed run's assembly folder

    rerun = Run(["narrate", str(source), "--out", str(out)], tmp_path / "run2")
    try:
        assert rerun.wait() == 0, rerun.stderr[-3000:]
    finally:
        rerun.stop()
    assert not list(out.glob(".voxflow/work/*"))
    assert list(out.glob("audiobooks/**/*.mp3"))


def claim_in_process(folder: Path, stay: bool) -> subprocess.Popen[bytes]:
    """A separate process that claims ``folder`` and then lives on (``stay``) or exits."""
    code = (
        f"import sys, time; from pathlib import Path; from voxflow import scratch; scratch.claim(Path({str(folder)!r}))"
    )
    code += "; print('claimed', flush=True); time.sleep(600)" if stay else ""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE)
    if stay:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"claimed"
    else:
        assert proc.wait(timeout=60) == 0
    return proc


def test_sweep_removes_only_folders_of_dead_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from voxflow import scratch
    from voxflow.io.outputs import OutputTree

    monkeypatch.setenv("VOXFLOW_TMP_DIR", str(tmp_path / "systmp"))
    out = tmp_path / "out"
    dead_tmp, live_tmp = out / ".voxflow/tmp/run-dead", out / ".voxflow/tmp/run-live"
    dead_work, unclaimed = out / ".voxflow/work/abc-dead", out / ".voxflow/work/abc-being-made"
    dead_bucket = tmp_path / "systmp" / "voxflow-run-bucket"
    foreign = tmp_path / "systmp" / "voxflow-not-ours"
    for folder in (dead_tmp, dead_work, dead_bucket):
        claim_in_process(folder, stay=False)
        (folder / "audio.wav").write_bytes(b"RIFF")
    unclaimed.mkdir(parents=True)
    foreign.mkdir(parents=True)
    live = claim_in_process(live_tmp, stay=True)  # a second run on the same tree, still going
    try:
        removed = scratch.sweep(OutputTree(str(out)))
        assert sorted(removed) == sorted([dead_tmp, dead_work, dead_bucket])
        assert live_tmp.is_dir() and unclaimed.is_dir() and foreign.is_dir()
    finally:
        live.kill()
        live.wait()
    assert scratch.sweep(OutputTree(str(out))) == [live_tmp]  # once its run is gone


def test_ctrl_c_in_a_long_recording_stops_after_the_chunks_in_flight(tmp_path: Path) -> None:
    """A 4-minute recording is ≈ 10 chunks, all queued at once for the embedded engine's two
    slots. After Ctrl-C only the chunks already in the engine finish: the others never start
    (counted from the run's own chunk checkpoints, one file per finished chunk)."""
    from tests.realspeech import make_recording

    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    make_recording(source / "long.flac", 4)
    checkpoints = lambda: list(out.glob(".voxflow/**/chunks/**/*.json"))  # noqa: E731
    run = Run(["transcribe", str(source), "--out", str(out), "--model", "local/tiny.en"], tmp_path / "run",
              {"VOXFLOW_LOCAL_THREADS": "1"})  # fmt: skip
    try:
        wait_for(checkpoints, "the first chunk to be transcribed", run)
        os.killpg(run.proc.pid, signal.SIGINT)
        code = run.wait()
    finally:
        run.stop()
    assert code == 130, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    finished = [p.name for p in checkpoints()]
    assert 1 <= len(finished) <= 4, finished  # 1 done + ≤ 2 in the engine's slots + 1 racing the signal


def test_ctrl_c_while_the_prefect_api_starts_stops_before_any_work(tmp_path: Path) -> None:
    """Ctrl-C right after the engine line, while Prefect's temporary server is still starting:
    the run does not wait for it to go on; nothing was started, nothing is in the catalog."""
    source, out = tmp_path / "in", tmp_path / "out"
    distinct_recordings(source, copies=1)
    run = Run(["transcribe", str(source), "--out", str(out), "--model", "local/tiny.en"], tmp_path / "run")
    try:
        wait_for(lambda: "engine:" in run.stderr, "the engine line", run)
        os.killpg(run.proc.pid, signal.SIGINT)
        code = run.wait()
    finally:
        run.stop()
    assert code == 130, run.stderr[-2000:]
    assert "interrupted before any recording started" in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert not list(out.glob("catalog/transcripts/*.parquet"))


def test_a_late_copy_of_ctrl_c_while_the_run_exits_prints_no_traceback(tmp_path: Path) -> None:
    """Ctrl-C during start-up, and a second copy of it (`uv run` forwards one, the terminal
    delivers one) just after the run said so, while it exits: the exit used to wait for the
    engine processes' model load and print a KeyboardInterrupt traceback from Python's exit
    handlers. Now the engine processes end at once and the copy changes nothing."""
    source, out = tmp_path / "in", tmp_path / "out"
    distinct_recordings(source, copies=1)
    run = Run(["transcribe", str(source), "--out", str(out)], tmp_path / "run")  # local/auto: a long load
    try:
        wait_for(lambda: "engine:" in run.stderr, "the engine line", run)
        os.killpg(run.proc.pid, signal.SIGINT)
        wait_for(lambda: "interrupted before any recording started" in run.stderr, "the run to stop", run)
        with contextlib.suppress(ProcessLookupError):
            run.proc.send_signal(signal.SIGINT)
        code = run.wait()
    finally:
        run.stop()
    assert code == 130, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr[-2000:]
