"""One emulator's live state: its fault draws, spent credit, request log, threads and engines."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from voxflow.testing.emulator.config import EmulatorConfig
from voxflow.testing.emulator.faults import FaultInjector

Endpoint = Literal["transcriptions", "speech", "chat", "models", "key"]


def new_entry(endpoint: Endpoint) -> dict[str, Any]:
    """A request-log record as a request arrives: model, hash, status and fault not known yet."""
    return {"t": time.time(), "endpoint": endpoint, "model": None, "sha256": None, "status": None, "fault": None}


class EmulatorState:
    """Config, fault draws, spent credit and the request log of one emulator."""

    def __init__(self, config: EmulatorConfig, *, warm: bool = False) -> None:
        self.config = config
        self.warm = warm  # load the local engines when the server starts
        self.faults = FaultInjector(config)
        self.chat_faults = FaultInjector(config, config.chat_faults, config.chat_fault_limit)
        self.chat = {m.id: m for m in config.chat_models}
        self.lines_to_lose = config.lose_line_limit  # None: every translation for lose_line_for
        self.cites_to_spoil = config.bad_cites  # None: every minutes answer
        self.prose_left = config.prose_minutes  # None: every minutes answer
        self.stt = {m.id: m for m in config.stt_models}
        self.tts = {m.id: m for m in config.tts_models}
        self._lock = threading.Lock()
        self._log: list[dict[str, Any]] = []
        self._seq = 0
        self.spent_usd = 0.0
        self.executor: ThreadPoolExecutor | None = None

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._log.append(entry)

    def log(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._log]

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self.spent_usd = 0.0

    def spend(self, cost: float) -> None:
        with self._lock:
            self.spent_usd += cost

    def lose_a_line(self, language: str) -> bool:
        """True when this translation answer is to lose a line (``lose_line_for``, ``lose_line_limit``)."""
        if language not in self.config.lose_line_for:
            return False
        with self._lock:
            if self.lines_to_lose is None:
                return True
            if self.lines_to_lose <= 0:
                return False
            self.lines_to_lose -= 1
            return True

    def spoil_a_cite(self) -> bool:
        """True when this minutes answer is to cite a time its prompt does not hold (``bad_cites``)."""
        return self._take("cites_to_spoil")

    def in_prose(self) -> bool:
        """True when this minutes answer is to be prose, not JSON (``prose_minutes``)."""
        return self._take("prose_left")

    def _take(self, counter: str) -> bool:
        """One from a countdown (None: always), True while it lasts."""
        with self._lock:
            left = getattr(self, counter)
            if left is None:
                return True
            if left <= 0:
                return False
            setattr(self, counter, left - 1)
            return True

    def credit_left(self) -> bool:
        credit = self.config.credit_usd
        return credit is None or self.spent_usd < credit

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the emulator's worker threads (ffmpeg, the engines)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def stt_engine(self) -> Any:
        from voxflow.engines.local import LocalTranscriber

        return LocalTranscriber(self.config.stt_engine, threads=self.config.local_threads)

    def tts_engine(self) -> Any:
        from voxflow.engines.local import LocalSynthesizer

        return LocalSynthesizer.shared(self.config.tts_engine)
