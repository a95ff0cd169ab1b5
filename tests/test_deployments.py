"""The deployments of deployments/prefect.yaml end to end on real Prefect infrastructure: a real
`prefect server start` on 127.0.0.1 (free port, temporary PREFECT_HOME, analytics off), a
`process` work pool, `prefect deploy` of the nightly archive transcription and the video-library
subtitles, `prefect deployment run`, and a real `prefect worker start --run-once` that runs both
flows in subprocesses. The outputs are then read back from disk and the flow-run states from the
server's REST API. Budget ≈ 60–90 s on 2 cores (server start-up and four CLI processes)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest
import yaml

from tests.conftest import ROOT, SAMPLES, prefect_rest
from tests.s3server import free_port

PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
POOL = "voxflow"


def test_prefect_yaml_defines_the_three_deployments() -> None:
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert set(deployments) == {"nightly-meeting-archive", "video-library-subtitles", "narrate-on-demand"}
    nightly = deployments["nightly-meeting-archive"]
    assert nightly["schedules"][0]["cron"] == "0 2 * * *"
    assert nightly["parameters"]["options"]["settle_seconds"] == 60
    assert {"source", "out", "model"} <= set(nightly["parameters"])
    assert deployments["video-library-subtitles"]["parameters"]["options"]["beside_source"] is True
    assert deployments["narrate-on-demand"]["entrypoint"] == "flows/narrate.py:narrate_flow"
    assert deployments["narrate-on-demand"]["schedules"] == []
    for d in deployments.values():
        assert d["work_pool"]["name"] == POOL
        path, name = d["entrypoint"].split(":")
        assert f"def {name}(" in (ROOT / path).read_text()


class PrefectServer:
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME (SQLite inside it)."""

    def __init__(self, home: Path) -> None:
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.log = home / "server.log"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_CLI_PROMPT": "false",
            "PYTHONUNBUFFERED": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> None:
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.api}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"prefect server did not answer within {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)  # the server and its uvicorn children
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()

    def prefect(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> str:
        """Run a `prefect …` CLI command against this server; its output."""
        proc = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            env={**self.env, **(env or {})},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, f"prefect {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout + proc.stderr

    def request(self, method: str, path: str, **kwargs: object) -> dict:
        return prefect_rest(method, f"{self.api}{path}", **kwargs)

    def trigger(self, name: str) -> str:
        """Start a run of deployment ``flow/deployment`` with its default parameters; its id."""
        deployment = self.request("GET", f"/deployments/name/{name}")
        return self.request("POST", f"/deployments/{deployment['id']}/create_flow_run", json={})["id"]

    def flow_run(self, run_id: str) -> dict:
        return self.request("GET", f"/flow_runs/{run_id}")


@pytest.fixture()
def prefect_server(tmp_path: Path) -> Iterator[PrefectServer]:
    home = tmp_path / "prefect-home"
    home.mkdir()
    server = PrefectServer(home)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_nightly_and_library_deployments_run_on_a_real_server_and_worker(
    prefect_server: PrefectServer, tmp_path: Path
) -> None:
    started = time.monotonic()
    archive, archive_out = tmp_path / "meetings", tmp_path / "meetings-out"
    (archive / "2024-05").mkdir(parents=True)
    shutil.copy(SAMPLES / "spk1_snt1.wav", archive / "2024-05" / "standup.wav")
    shutil.copy(SAMPLES / "spk1_snt3.wav", archive / "2024-05" / "retro.wav")
    old = time.time() - 3600
    for f in (archive / "2024-05").iterdir():
        os.utime(f, (old, old))  # copied long ago: settled
    shutil.copy(SAMPLES / "beckett.wav", archive / "still-copying.wav")  # just now: waits (settle 60 s)
    library, library_catalog = tmp_path / "movies", tmp_path / "catalog"
    (library / "Speech (1961)").mkdir(parents=True)
    shutil.copy(SAMPLES / "jfk video.mp4", library / "Speech (1961)" / "Speech (1961).mp4")
    os.utime(library / "Speech (1961)" / "Speech (1961).mp4", (old, old))
    inbox, books = tmp_path / "inbox", tmp_path / "books"
    inbox.mkdir()
    (inbox / "note.txt").write_text("A short note.\n\nIt is read aloud on demand.\n")

    prefect_server.prefect("work-pool", "create", POOL, "--type", "process")
    deploy_env = {
        "VOXFLOW_ARCHIVE_SOURCE": str(archive),
        "VOXFLOW_ARCHIVE_OUT": str(archive_out),
        "VOXFLOW_LIBRARY_SOURCE": str(library),
        "VOXFLOW_LIBRARY_OUT": str(library_catalog),
        "VOXFLOW_NARRATE_SOURCE": str(inbox),
        "VOXFLOW_NARRATE_OUT": str(books),
    }
    prefect_server.prefect(
        "--no-prompt",
        "deploy",
        "--prefect-file",
        str(PREFECT_YAML.relative_to(ROOT)),
        "--all",
        env=deploy_env,
    )
    # the nightly run through the CLI, the two others through the REST API (as the UI does)
    out = prefect_server.prefect("deployment", "run", "transcribe/nightly-meeting-archive")
    run_ids = [re.search(r"UUID:\s*([0-9a-f-]{36})", out).group(1)]
    run_ids += [prefect_server.trigger(n) for n in ("transcribe/video-library-subtitles", "narrate/narrate-on-demand")]
    worker_env = {"VOXFLOW_LOCAL_THREADS": "1"}  # no OPENROUTER_API_KEY: the embedded engines
    worker = prefect_server.prefect("worker", "start", "--pool", POOL, "--run-once", env=worker_env, timeout=150)

    states = {rid: prefect_server.flow_run(rid)["state"] for rid in run_ids}
    assert all(s["type"] == "COMPLETED" for s in states.values()), (states, worker[-4000:])

    # (1) nightly archive: the settled recordings transcribed, the fresh one left for next night
    assert sorted(p.name for p in (archive_out / "2024-05").glob("*.en.srt")) == ["retro.en.srt", "standup.en.srt"]
    assert not (archive_out / "still-copying.en.srt").exists()
    manifest = json.loads(next((archive_out / "runs").glob("*.json")).read_text())
    assert manifest["unsettled"] == ["still-copying.wav"] and manifest["settings"]["settle_seconds"] == 60
    rows = duckdb.sql(
        f"select rel_path, status, text from read_parquet('{archive_out}/catalog/transcripts/*.parquet') order by 1"
    ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("2024-05/retro.wav", "done"), ("2024-05/standup.wav", "done")]
    assert "small dog" in rows[1][2].lower()

    # (2) video library: subtitles beside the video, catalog elsewhere
    movie = library / "Speech (1961)"
    assert {p.name for p in movie.iterdir()} == {"Speech (1961).mp4", "Speech (1961).en.srt", "Speech (1961).en.vtt"}
    assert "your country" in (movie / "Speech (1961).en.srt").read_text().lower()
    assert list(library_catalog.glob("catalog/transcripts/*.parquet"))

    # (3) narration on demand: an MP3 audiobook
    assert list((books / "audiobooks" / "note").glob("*.mp3"))
    print(f"deployment e2e: {time.monotonic() - started:.1f} s (server start-up not included)")
