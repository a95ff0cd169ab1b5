"""`voxflow server start|status|stop`: a real Prefect server kept in the background, found by
later runs (their flow runs are recorded on it), stopped with nothing left running."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import SAMPLES


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_HOME": str(home), "VOXFLOW_LOCAL_THREADS": "1"}
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
        source = tmp_path / "in"
        source.mkdir()
        shutil.copy(SAMPLES / "spk1_snt3.wav", source / "clip.wav")
        run = cli(home, "transcribe", str(source), "--out", str(tmp_path / "out"), "--model", "local/tiny.en")
        assert run.returncode == 0, run.stderr
        flow_runs = httpx.post(f"http://127.0.0.1:{port}/api/flow_runs/filter", json={}, timeout=30).json()
        ours = [r for r in flow_runs if r["parameters"].get("source") == str(source)]
        assert [r["state_type"] for r in ours] == ["COMPLETED"], "the run used the background server"
    finally:
        stopped = cli(home, "server", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert cli(home, "server", "status").returncode == 1
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(port) in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, "nothing left running"
