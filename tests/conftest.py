"""Shared fixtures: isolated Prefect home, no API key, real sample clips, bad inputs."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_data" / "recordings"
sys.path.insert(0, str(ROOT))  # flows/ and tasks/

_PREFECT_HOME = tempfile.mkdtemp(prefix="voxflow-prefect-")
os.environ.update(
    {
        "PREFECT_HOME": _PREFECT_HOME,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
)
os.environ.pop("OPENROUTER_API_KEY", None)  # tests never reach the real service
os.environ.pop("PREFECT_API_URL", None)


def reference_texts() -> dict[str, str]:
    data = json.loads((SAMPLES / "transcripts.json").read_text())
    return {name: v["text"] for name, v in data.items() if v["text"] and not v.get("approximate")}


def normal_words(text: str) -> str:
    """Lower-case words without punctuation, for word error rates (jiwer)."""
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test server for the whole session (≈ 12–20 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture()
def clip_dir(tmp_path: Path) -> Path:
    """A folder with three short real clips."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("jfk.flac", "beckett.wav", "spk1_snt3.wav"):
        shutil.copy(SAMPLES / name, folder / name)
    return folder


def make_bad_inputs(folder: Path) -> dict[str, str]:
    """Every kind of bad input the issue names, plus one good file; name → expected status."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "corrupt.flac").write_bytes(b"fLaC" + os.urandom(4000))
    (folder / "notes.mp3").write_text("This is a text file that only pretends to be an MP3.\n" * 20)
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "anoisesrc=r=16000:a=0.0005:c=pink",
        "-t",
        "6",
        str(folder / "silent.wav"),
    )
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=black:s=160x120:r=5:d=3",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        str(folder / "no audio.mp4"),
    )
    shutil.copy(SAMPLES / "spk1_snt1.wav", folder / "Réunion d’équipe 2024.wav")
    locked = folder / "locked.wav"
    shutil.copy(SAMPLES / "spk1_snt3.wav", locked)
    locked.chmod(0)
    data = (SAMPLES / "jfk.mp3").read_bytes()
    (folder / "truncated.mp3").write_bytes(data[: len(data) // 2])
    shutil.copy(SAMPLES / "beckett.wav", folder / "good.wav")
    return {
        "empty.wav": "failed",
        "corrupt.flac": "failed",
        "notes.mp3": "failed",
        "silent.wav": "done",
        "no audio.mp4": "failed",
        "Réunion d’équipe 2024.wav": "done",
        "locked.wav": "failed",
        "truncated.mp3": "done",
        "good.wav": "done",
    }


def unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` without root's power to read any file (so chmod 000 bites), if we are root."""
    if os.geteuid() != 0:
        return cmd
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--", *cmd]


def cli_run(*args: str, cwd: Path = ROOT, prefect_api: str | None = None) -> subprocess.CompletedProcess:
    """``voxflow ARGS`` in a new process (against the session's Prefect server when given)."""
    env = {**os.environ, "VOXFLOW_LOCAL_THREADS": "1"}
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    if args[0] == "transcribe":
        env["VOXFLOW_MODEL"] = "local/tiny.en"
    cmd = [sys.executable, "-m", "voxflow.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)


def prefect_rest(method: str, url: str, **kwargs: object) -> Any:
    """One call to a Prefect server's REST API, its JSON; retried on 503 as Prefect's own client
    does: the server answers 503 while its SQLite database is busy (seen on a loaded CI machine)."""
    import httpx

    for attempt in range(6):
        response = httpx.request(method, url, timeout=30, **kwargs)
        if response.status_code != 503:
            break
        time.sleep(0.5 * 2**attempt)
    return response.raise_for_status().json()


@pytest.fixture()
def prefect_api(prefect_harness: None) -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def ffprobe_seconds(path: Path) -> float:
    """A media file's duration by ffprobe (an oracle independent of voxflow)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout)


@pytest.fixture()
def emulator(monkeypatch: pytest.MonkeyPatch):
    """Start OpenRouter emulators on 127.0.0.1 (``emulator(key, **config)``) and point the
    OpenRouter settings at the last one; all are stopped after the test."""
    from voxflow.testing.emulator import start_emulator_in_thread

    handles = []

    def start(key: str, **config):
        handle = start_emulator_in_thread(keys=(key,), **config)
        handles.append(handle)
        monkeypatch.setenv("OPENROUTER_API_KEY", key)
        monkeypatch.setenv("OPENROUTER_BASE_URL", handle.url)
        return handle

    yield start
    for handle in handles:
        handle.stop()


@pytest.fixture()
def api(emulator):
    """``api(**config)``: an emulator for the chat tests' key (tests/chatrun.py), the OpenRouter
    settings pointed at it. A module may define its own ``api`` (its own key)."""
    from tests.chatrun import KEY

    return functools.partial(emulator, KEY)
