"""Running the emulator: uvicorn on 127.0.0.1, in the foreground (``voxflow emulator``) or in a
background thread with a handle to stop it (tests, benchmarks)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import replace
from typing import Any

from starlette.applications import Starlette

from voxflow.testing.emulator.app import create_app
from voxflow.testing.emulator.config import API_PREFIX, DEFAULT_KEY, EmulatorConfig
from voxflow.testing.emulator.state import EmulatorState

_START_TIMEOUT_S = 60


class _QuietDrops(logging.Filter):
    """Hides uvicorn's complaint about the answers a ``drop`` fault cuts short on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


def _server(app: Starlette, host: str, port: int) -> Any:
    import uvicorn

    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(_QuietDrops())
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http="h11",
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        backlog=2048,
        timeout_keep_alive=30,
        limit_concurrency=None,
        h11_max_incomplete_event_size=64 * 1024,
    )
    return uvicorn.Server(config)


def run_emulator(host: str = "127.0.0.1", port: int = 8089, config: EmulatorConfig | None = None) -> None:
    """Serve the emulator until interrupted (Ctrl-C)."""
    server = _server(create_app(config, warm=True), host, port)
    server.run()


def serve(port: int, faults: str | None, latency_ms: int, keys: list[str]) -> None:
    """The ``voxflow emulator`` command: serve on 127.0.0.1:``port`` until Ctrl-C."""
    config = EmulatorConfig(keys=tuple(keys) or (DEFAULT_KEY,), faults=faults or None, latency_ms=latency_ms)
    which = "the default test key (voxflow.testing.emulator.DEFAULT_KEY)" if not keys else "your key(s)"
    print(f"voxflow emulator: OPENROUTER_BASE_URL=http://127.0.0.1:{port}{API_PREFIX}")
    print(f"  accepts {which}; faults: {faults or 'none'}; latency: {latency_ms} ms")
    run_emulator("127.0.0.1", port, config)


class EmulatorHandle:
    """A running emulator in a background thread (see :func:`start_emulator_in_thread`)."""

    def __init__(self, server: Any, thread: threading.Thread, state: EmulatorState, host: str, port: int) -> None:
        self._server = server
        self._thread = thread
        self.state = state
        self.host = host
        self.port = port
        self.root = f"http://{host}:{port}"
        self.url = self.root + API_PREFIX  # what OPENROUTER_BASE_URL should be

    @property
    def config(self) -> EmulatorConfig:
        return self.state.config

    @property
    def key(self) -> str:
        return self.state.config.keys[0]

    def log(self) -> list[dict[str, Any]]:
        """The request log (a copy)."""
        return self.state.log()

    def reset(self) -> None:
        self.state.reset()

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmulatorHandle(url={self.url!r})"


def start_emulator_in_thread(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    warm: bool = False,
    **overrides: Any,
) -> EmulatorHandle:
    """Start an emulator on ``host:port`` (0 = a free port) and return once it listens.

    ``overrides`` replace config fields: ``start_emulator_in_thread(faults="429:0.3")``.
    """
    config = replace(config or EmulatorConfig(), **overrides)
    app = create_app(config, warm=warm)
    sock = _listening_socket(host, port)
    server = _server(app, host, sock.getsockname()[1])
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="voxflow-emulator", daemon=True)
    thread.start()
    _wait_started(server, thread, sock)
    return EmulatorHandle(server, thread, app.state.emulator, host, sock.getsockname()[1])


def _listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def _wait_started(server: Any, thread: threading.Thread, sock: socket.socket) -> None:
    """Wait until ``server`` serves; RuntimeError (and everything stopped) if it dies or hangs."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the emulator did not start")
        time.sleep(0.01)
