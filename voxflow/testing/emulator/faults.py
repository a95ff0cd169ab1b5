"""Fault injection: the fault spec, the seeded draw for each audio request, and the answer
each fault gives (an HTTP error, a slow answer, a dropped connection or a malformed body)."""

from __future__ import annotations

import asyncio
import math
import random
import threading
from typing import TYPE_CHECKING, Any, Literal

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from voxflow.testing.emulator.protocol import Problem, price_str

if TYPE_CHECKING:
    from voxflow.testing.emulator.config import EmulatorConfig

FAULT_NAMES = frozenset({"slow", "drop", "malformed"})
FaultyEndpoint = Literal["transcriptions", "speech", "chat"]
_ERROR_MESSAGES = {
    429: "Rate limit exceeded: free-models-per-min",
    408: "Request timed out",
    500: "Internal Server Error",
    502: "Provider returned error",
    503: "Service temporarily unavailable",
    504: "Gateway timeout",
    524: "Edge network timeout",
    529: "Provider is overloaded",
}


def parse_faults(spec: str | None) -> dict[str, float]:
    """``"429:0.1,slow:0.05"`` → {"429": 0.1, "slow": 0.05}; probabilities must sum ≤ 1."""
    faults: dict[str, float] = {}
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition(":")
        name = name.strip().lower()
        try:
            p = float(value) if sep else math.nan
        except ValueError:
            p = math.nan
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"fault {part!r}: give NAME:PROBABILITY with 0 ≤ p ≤ 1")
        if name not in FAULT_NAMES and not (name.isdigit() and 400 <= int(name) <= 599):
            raise ValueError(f"unknown fault {name!r}: an HTTP status 400-599, slow, drop, malformed")
        faults[name] = faults.get(name, 0.0) + p
    if sum(faults.values()) > 1.0 + 1e-9:
        raise ValueError(f"fault probabilities add up to more than 1: {spec}")
    return faults


class Dropped(Response):
    """Starts a 200 answer, sends part of it and closes the connection (a dropped socket)."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"text": "', "more_body": True})
        # returning now makes the server close the connection mid-body


class FaultInjector:
    """Draws at most one fault for each billed request (seeded) and plays it out; ``spec``
    replaces the config's fault spec, ``limit`` caps how many faults it draws in all."""

    def __init__(self, config: EmulatorConfig, spec: str | None = None, limit: int | None = None) -> None:
        self.config = config
        self.rates = parse_faults(spec if spec is not None else config.faults)
        self.left = limit
        self._random = random.Random(config.seed)
        self._lock = threading.Lock()

    def draw(self) -> str | None:
        """A fault name ("429", "slow", …) with its configured probability, or None."""
        if not self.rates:
            return None
        with self._lock:
            if self.left is not None and self.left <= 0:
                return None
            x = self._random.random()
            for name, p in self.rates.items():
                if x < p:
                    if self.left is not None:
                        self.left -= 1
                    return name
                x -= p
        return None

    async def inject(self, entry: dict[str, Any], endpoint: FaultyEndpoint) -> Response | None:
        """Draw a fault into the log ``entry``, wait the latency (plus ``slow_ms`` for a slow
        fault) and return the fault's answer, or None when the request is to be served."""
        fault = self.draw()
        entry["fault"] = fault
        ms = self.config.latency_ms + (self.config.slow_ms if fault == "slow" else 0)
        if ms > 0:
            await asyncio.sleep(ms / 1000)
        return self.answer(fault, endpoint)

    def answer(self, fault: str | None, endpoint: FaultyEndpoint) -> Response | None:
        """What ``fault`` answers instead of the real response (None: answer normally)."""
        if fault is None or fault == "slow":
            return None
        if fault == "drop":
            return Dropped()
        if fault == "malformed":
            if endpoint == "speech":
                return Response(b"<html><body>502 Bad Gateway</body></html>", 200, media_type="text/html")
            if endpoint == "chat":
                return Response(b'{"choices": [{"message": {"content": "1. ', 200, media_type="application/json")
            return Response(b'{"text": "And so my fellow', 200, media_type="application/json")
        status = int(fault)
        headers = {"Retry-After": price_str(self.config.retry_after)} if status in (429, 503) else {}
        return Problem(status, _ERROR_MESSAGES.get(status, f"Emulated error {status}"), headers).response()
