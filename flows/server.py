"""Prefect's temporary server, bound to the process that starts it.

Without ``PREFECT_API_URL`` a flow run starts a temporary Prefect server (uvicorn, ≈ 200 MB,
listening on a port). Prefect stops it at exit, but a run killed with ``kill -9`` never gets
there and the server lives on. Started here instead, the server runs in its own session (the
terminal's Ctrl-C does not stop it while the run winds down), with SIGTERM blocked (systemd's
default ``KillMode=control-group`` sends SIGTERM to every process of the unit: the run winds
down and still reports to it), and the kernel kills it when its parent dies, however it dies
(Linux ``PR_SET_PDEATHSIG``). The run stops it with SIGINT, which uvicorn handles as SIGTERM.
Its own output goes to ``$PREFECT_HOME/voxflow-server.log``, not to the user's terminal.

``voxflow server start`` keeps one server running in the background instead (with its UI);
runs find it through ``$PREFECT_HOME/voxflow-server.json`` and skip the temporary server's
start-up, which dominates small jobs.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import psutil
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_ENABLED

from voxflow.errors import ConfigError

PR_SET_PDEATHSIG = 1


def start_bound_server() -> str | None:
    """Start the temporary server from this thread, bound to it: call it from a thread that lives
    as long as the process (the main thread, or voxflow.cli.common's API thread); Prefect's
    clients then find and reuse it. Its API URL (None with a configured ``PREFECT_API_URL``):
    tasks on Dask workers, in other processes, are told to use it. Prefect's server module
    (≈ 1.4 s to import) is imported only here: a run that finds a server never pays for it."""
    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    from prefect.server.api import server as prefect_server

    existing = prefect_server.SubprocessASGIServer._instances.get(None)
    if existing is not None and existing.running:
        return existing.api_url
    prefect_server.SubprocessASGIServer._instances.pop(None, None)
    server = _bound_server_class(prefect_server)()
    server.start()
    return server.api_url


@functools.cache
def _bound_server_class(prefect_server: Any) -> type:
    class BoundServer(prefect_server.SubprocessASGIServer):
        """Prefect's server, started in its own session and killed when its parent dies."""

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            bind = functools.partial(_die_with_parent, os.getpid())
            with _server_log().open("ab") as log:  # its shutdown noise stays out of the user's terminal
                popen = functools.partial(
                    _popen_uvicorn, preexec_fn=bind, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
                )
                original = prefect_server.subprocess
                prefect_server.subprocess = types.SimpleNamespace(Popen=popen, TimeoutExpired=subprocess.TimeoutExpired)
                try:
                    return super()._run_uvicorn_command()
                finally:
                    prefect_server.subprocess = original

        def stop(self) -> None:
            if self.server_process is not None and self.server_process.poll() is None:
                self.server_process.send_signal(signal.SIGINT)  # its SIGTERM is blocked
            super().stop()

    return BoundServer


# uvicorn, ended by os._exit once it has shut down: after a SIGINT, the interpreter's own
# teardown of Prefect's server took ≈ 1 s (a SIGTERM, which is blocked in it, ends at once)
UVICORN_THEN_EXIT = """
import os, sys
from uvicorn.main import main
code = 1
try:
    main(prog_name="uvicorn")
except SystemExit as done:
    code = done.code if isinstance(done.code, int) else 0
except KeyboardInterrupt:
    code = 0
finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
"""


def _popen_uvicorn(args: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Prefect's ``python -m uvicorn ARGS``, run as ``python -c UVICORN_THEN_EXIT ARGS``."""
    at = args.index("uvicorn")
    if args[at - 1] == "-m":
        args = [*args[: at - 1], "-c", UVICORN_THEN_EXIT, *args[at + 1 :]]
    return subprocess.Popen(args, **kwargs)


def _server_log() -> Path:
    """Where the temporary server's own output goes: ``$PREFECT_HOME/voxflow-server.log``."""
    home = Path(PREFECT_HOME.value())
    home.mkdir(parents=True, exist_ok=True)
    return home / "voxflow-server.log"


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: SIGTERM blocked (the mask outlives exec, and uvicorn's handler
    does not unblock it); SIGKILL when the parent thread exits (Linux only)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)


# --- a server kept in the background: `voxflow server start|stop|status` ---------------

STATE_FILE = "voxflow-server.json"
START_TIMEOUT_S = 120.0


def background_server_url() -> str | None:
    """The API URL of the server ``voxflow server start`` left running, when it answers
    (runs then skip the temporary server's start-up); None otherwise."""
    state = _read_state()
    if state is None or not _serves(state):
        return None
    return state["url"]


def start_background_server(port: int) -> dict[str, Any]:
    """Start ``prefect server start`` on 127.0.0.1:``port`` in its own session (it outlives this
    process), wait until it answers, and remember it in ``$PREFECT_HOME/voxflow-server.json``."""
    running = _read_state()
    if running is not None and _serves(running):
        return running
    env = {**os.environ, "PREFECT_UI_ENABLED": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with _server_log().open("ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state = {"url": f"http://127.0.0.1:{port}/api", "ui": f"http://127.0.0.1:{port}", "pid": process.pid}
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(state["url"]):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise ConfigError(
                f"the Prefect server did not start on port {port}: is it in use? try --port (log: {_server_log()})"
            )
        time.sleep(0.5)
    _state_path().write_text(json.dumps(state))
    return state


def stop_background_server() -> dict[str, Any] | None:
    """Stop the server ``start_background_server`` started (None: none was running)."""
    state = _read_state()
    _state_path().unlink(missing_ok=True)
    if state is None or not _is_our_server(state["pid"]):
        return None
    os.killpg(state["pid"], signal.SIGTERM)
    with contextlib.suppress(psutil.NoSuchProcess, psutil.TimeoutExpired):
        psutil.Process(state["pid"]).wait(timeout=30)
    return state


def _state_path() -> Path:
    return _server_log().with_name(STATE_FILE)


def _read_state() -> dict[str, Any] | None:
    try:
        state = json.loads(_state_path().read_text())
        return state if {"url", "pid"} <= set(state) else None
    except (OSError, ValueError):
        return None


def _serves(state: dict[str, Any]) -> bool:
    return _is_our_server(state["pid"]) and _answers(state["url"])


def _is_our_server(pid: int) -> bool:
    """``pid`` is alive and is a Prefect server (not a process that reused the number)."""
    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return "prefect" in command and "server" in command


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False
