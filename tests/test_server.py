"""`voxflow server start|status|stop`: a real Prefect server kept in the background, found by
later runs (their flow runs are recorded on it), stopped with nothing left running."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import SAMPLES, prefect_rest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(home: Path, *args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_HOME": str(home), "VOXFLOW_LOCAL_THREADS": "1", **env_vars}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "voxflow.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.mark.timeout(900)
def test_a_background_server_serves_later_runs_and_stops(tmp_path: Path) -> None:
    home, port = tmp_path / "prefect-home", free_port()
    assert cli(home, "server", "status").returncode == 1
    started = cli(home, "server", "start", "--port", str(port))
    try:
        assert started.returncode == 0, started.stderr
        assert f"http://127.0.0.1:{port}" in started.stdout
        assert cli(home, "server", "status").returncode == 0
        doctor = cli(home, "doctor")
        assert f"background server http://127.0.0.1:{port}/api is up" in doctor.stdout, doctor.stdout
        source = tmp_path / "in"
        source.mkdir()
        shutil.copy(SAMPLES / "spk1_snt3.wav", source / "clip.wav")
        run = cli(home, "transcribe", str(source), "--out", str(tmp_path / "out"), "--model", "local/tiny.en")
        assert run.returncode == 0, run.stderr
        flow_runs = prefect_rest("POST", f"http://127.0.0.1:{port}/api/flow_runs/filter", json={})
        ours = [r for r in flow_runs if r["parameters"].get("source") == str(source)]
        assert [r["state_type"] for r in ours] == ["COMPLETED"], "the run used the background server"
        beating = cli(home, "transcribe", str(source), "--out", str(tmp_path / "out2"), "--model", "local/tiny.en",
                      PREFECT_FLOWS_HEARTBEAT_FREQUENCY="30")  # fmt: skip
        assert beating.returncode == 0, beating.stderr
        assert heartbeats_of(port) == {flow_run_of(port, tmp_path / "out2")}, "set: the run sends heartbeats"
        assert flow_run_of(port, tmp_path / "out") not in heartbeats_of(port), "unset: none (its end waited for them)"
    finally:
        stopped = cli(home, "server", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert cli(home, "server", "status").returncode == 1
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(port) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, "nothing left running"


def flow_run_of(port: int, out: Path) -> str:
    flow_runs = prefect_rest("POST", f"http://127.0.0.1:{port}/api/flow_runs/filter", json={})
    return next(r["id"] for r in flow_runs if r["parameters"].get("out") == str(out))


def heartbeats_of(port: int, wait_s: float = 20) -> set[str]:
    """The flow runs the server has heartbeat events of, once it has any (events are stored
    a moment after they are sent)."""
    query = {"filter": {"event": {"name": ["prefect.flow-run.heartbeat"]}}}
    deadline = time.monotonic() + wait_s
    while True:
        events = prefect_rest("POST", f"http://127.0.0.1:{port}/api/events/filter", json=query)["events"]
        if events or time.monotonic() > deadline:
            return {e["resource"]["prefect.resource.id"].removeprefix("prefect.flow-run.") for e in events}
        time.sleep(0.5)
