"""Prefect's temporary server, bound to the process that starts it.

Without ``PREFECT_API_URL`` a flow run starts a temporary Prefect server (uvicorn, ≈ 200 MB,
listening on a port). Prefect stops it at exit, but a run killed with ``kill -9`` never gets
there and the server lives on. Started here instead, the server runs in its own session (the
terminal's Ctrl-C does not stop it while the run winds down) and the kernel kills it when its
parent dies, however it dies (Linux ``PR_SET_PDEATHSIG``). Its own output goes to
``$PREFECT_HOME/voxflow-server.log``, not to the user's terminal.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

from prefect.server.api import server as prefect_server
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_ENABLED

PR_SET_PDEATHSIG = 1


def start_bound_server() -> str | None:
    """Start the temporary server from this (main) thread, bound to this process; Prefect's
    clients then find and reuse it. Its API URL (None with a configured ``PREFECT_API_URL``):
    tasks on Dask workers, in other processes, are told to use it."""
    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    existing = prefect_server.SubprocessASGIServer._instances.get(None)
    if existing is not None and existing.running:
        return existing.api_url
    prefect_server.SubprocessASGIServer._instances.pop(None, None)
    server = _BoundServer()
    server.start()
    return server.api_url


class _BoundServer(prefect_server.SubprocessASGIServer):
    """Prefect's server, started in its own session and killed when its parent dies."""

    def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
        bind = functools.partial(_die_with_parent, os.getpid())
        with _server_log().open("ab") as log:  # its shutdown noise stays out of the user's terminal
            popen = functools.partial(
                subprocess.Popen, preexec_fn=bind, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
            )
            original = prefect_server.subprocess
            prefect_server.subprocess = types.SimpleNamespace(Popen=popen, TimeoutExpired=subprocess.TimeoutExpired)
            try:
                return super()._run_uvicorn_command()
            finally:
                prefect_server.subprocess = original


def _server_log() -> Path:
    """Where the temporary server's own output goes: ``$PREFECT_HOME/voxflow-server.log``."""
    home = Path(PREFECT_HOME.value())
    home.mkdir(parents=True, exist_ok=True)
    return home / "voxflow-server.log"


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: SIGKILL when the parent thread exits (Linux only)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
