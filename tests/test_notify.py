"""`--notify URL`: the real CLI in a subprocess POSTs to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from voxflow.notify import safe_url


class Receiver:
    """An HTTP server that records every POST body (JSON) and answers ``status``."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                receiver.paths.append(self.path)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "VOXFLOW_LOCAL_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "voxflow.cli", *args], capture_output=True, text=True, env=environ, timeout=600
    )


def refused_source(tmp_path: Path) -> Path:
    """A source whose only file is refused at planning (not audio): a failed run with no Prefect."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.wav").write_text("text pretending to be audio\n" * 10)
    return src


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_failed_run_posts_summary_and_hides_credentials(tmp_path: Path, receiver: Receiver) -> None:
    url = f"http://hookuser:hookpass@127.0.0.1:{receiver.port}/hook?token=SECRETTOKEN"
    out = tmp_path / "out"
    result = cli("transcribe", str(refused_source(tmp_path)), "--out", str(out), "--notify", url)
    assert result.returncode == 1
    (body,) = receiver.bodies
    (manifest_path,) = (out / "runs").glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert body["run_id"] == manifest["run_id"] == manifest_path.stem
    assert body["status"] == "failed" and body["command"] == "transcribe"
    assert body["counts"]["failed"] == manifest["counts"]["failed"] == 1
    assert [f["file"] for f in body["failures"]] == [e["file"] for e in manifest["errors"]] == ["notes.wav"]
    assert body["cost_usd"] == manifest["cost_usd"]
    assert Path(body["manifest"]) == manifest_path
    assert "notes.wav" in body["text"] and manifest["run_id"] in body["text"]
    assert receiver.paths == ["/hook?token=SECRETTOKEN"]
    for secret in ("hookpass", "SECRETTOKEN"):
        assert secret not in result.stdout + result.stderr + manifest_path.read_text()


def test_clean_run_posts_only_with_notify_always(tmp_path: Path, receiver: Receiver) -> None:
    src = tmp_path / "src"
    src.mkdir()
    out = tmp_path / "out"
    url = f"http://127.0.0.1:{receiver.port}/hook"
    shutil.copy(SAMPLES / "spk1_snt1.wav", src / "one.wav")
    first = cli("transcribe", str(src), "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert cli("transcribe", str(src), "--out", str(out), VOXFLOW_NOTIFY_URL=url).returncode == 0
    assert receiver.bodies == []  # nothing failed: nothing sent
    assert cli("transcribe", str(src), "--out", str(out), "--notify", url, "--notify-always").returncode == 0
    (body,) = receiver.bodies
    assert body["status"] == "ok" and body["counts"]["skipped"] == 1


@pytest.mark.parametrize("status", [None, 500])
def test_failed_post_is_one_warning_not_a_failed_run(tmp_path: Path, status: int | None) -> None:
    broken = Receiver(status) if status else None
    port = broken.port if broken else free_port()  # None: nothing listens there
    url = f"http://user:pw@127.0.0.1:{port}/hook?key=SECRETTOKEN"
    try:
        result = cli("transcribe", str(refused_source(tmp_path)), "--out", str(tmp_path / "out"), "--notify", url)
    finally:
        if broken:
            broken.stop()
    assert result.returncode == 1  # the run's own outcome (one refused file), not the POST's
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: notification")]
    assert len(warnings) == 1 and f"127.0.0.1:{port}/hook" in warnings[0]
    assert "SECRETTOKEN" not in result.stderr and ":pw@" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://u:p@hooks.example.com/services/T0?x=1#f", "https://hooks.example.com/services/T0"),
        ("http://127.0.0.1:8080/a", "http://127.0.0.1:8080/a"),
        ("https://token@example.com:443/", "https://example.com:443/"),
    ],
)
def test_safe_url_strips_userinfo_and_query(url: str, shown: str) -> None:
    assert safe_url(url) == shown


def test_prefect_automation_file_is_valid_and_targets_voxflow_failures() -> None:
    """deployments/automation-run-failed.yaml, filled in as the README says, is what
    `prefect automation create --from-file` accepts (Prefect's own AutomationCore model)."""
    import string
    import uuid

    import yaml
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger

    block_id = str(uuid.uuid4())
    text = (Path(__file__).parent.parent / "deployments" / "automation-run-failed.yaml").read_text()
    filled = string.Template(text).substitute(VOXFLOW_ALERT_BLOCK_ID=block_id)  # what envsubst does
    (raw,) = yaml.safe_load(filled)["automations"]
    automation = AutomationCore.model_validate(raw)
    assert isinstance(automation.trigger, EventTrigger)
    assert automation.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    (action,) = automation.actions
    assert isinstance(action, SendNotification) and str(action.block_document_id) == block_id
    tags = yaml.safe_load((Path(__file__).parent.parent / "deployments" / "prefect.yaml").read_text())
    assert all("voxflow" in d["tags"] for d in tags["deployments"])  # the trigger's tag is on every deployment


def test_narrate_posts_its_failures(tmp_path: Path, receiver: Receiver) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "empty.txt").write_bytes(b"")
    out = tmp_path / "out"
    result = cli("narrate", str(docs), "--out", str(out), VOXFLOW_NOTIFY_URL=f"http://127.0.0.1:{receiver.port}/n")
    assert result.returncode == 1, result.stderr
    (body,) = receiver.bodies
    (manifest_path,) = (out / "runs").glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert body["command"] == "narrate" and body["run_id"] == manifest["run_id"]
    assert [f["file"] for f in body["failures"]] == [e["file"] for e in manifest["errors"]] == ["empty.txt"]


@pytest.mark.parametrize(
    ("summary", "always", "sent", "status"),
    [
        ({"failed": 0}, False, False, "ok"),
        ({"failed": 0}, True, True, "ok"),
        ({"failed": 2}, False, True, "failed"),
        ({"aborted": "OutOfCredits: 402"}, False, True, "aborted"),
        ({"interrupted": True}, False, True, "interrupted"),
    ],
)
def test_when_a_summary_is_sent(summary: dict, always: bool, sent: bool, status: str) -> None:
    from voxflow.notify import payload, should_notify

    assert should_notify(summary, always) is sent
    assert payload("transcribe", summary)["status"] == status


def test_a_notify_url_that_can_never_work_is_refused_before_any_work(tmp_path: Path) -> None:
    import subprocess
    import sys

    for url in ("notaurl", "file:///etc/passwd"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "voxflow.cli",
                "transcribe",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--notify",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and proc.stderr.strip().startswith("error: --notify (VOXFLOW_NOTIFY_URL)"), (
            proc.stderr
        )
        assert not (tmp_path / "o").exists(), "refused before any work"
