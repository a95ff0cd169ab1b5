"""Run-wide limits shared by every task and thread of a run.

:class:`RequestLimiter` caps in-flight engine requests across threads and event loops (each
Prefect task thread runs its own loop) and adapts: a 429 halves the limit and pauses new
requests for the advised ``Retry-After``, so a rate-limit storm slows the whole run; steady
successes raise it back (additive increase). :class:`Budget` stops new work before the spent
cost would pass ``--budget-usd``. Clock and sleep are injectable for tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from voxflow.errors import BudgetExceeded

Sleep = Callable[[float], Awaitable[None]]
BURST_WINDOW_S = 1.0


class RequestLimiter:
    """At most ``limit`` requests in flight, shrinking on 429 and growing back on success."""

    def __init__(
        self,
        limit: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        recover_after: int = 8,
    ) -> None:
        self.max_limit = limit
        self._limit = limit
        self._in_flight = 0
        self._pause_until = 0.0
        self._calm_after = 0.0  # 429s before this belong to the burst that already halved
        self._successes = 0
        self._recover_after = recover_after
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()
        self.peak_in_flight = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            delay = self._pause_until - self._clock()
            if delay > 0:
                await self._sleep(delay)
                continue
            with self._lock:
                if self._in_flight < self._limit:
                    self._in_flight += 1
                    self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
                    return
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
            try:
                await future
            except asyncio.CancelledError:
                with self._lock:
                    if (loop, future) in self._waiters:
                        self._waiters.remove((loop, future))
                raise

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._wake(self._limit - self._in_flight)

    def _wake(self, n: int) -> None:
        while n > 0 and self._waiters:
            loop, future = self._waiters.popleft()
            loop.call_soon_threadsafe(_resolve, future)
            n -= 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429: halve the limit (once per burst: 429s that arrive within the pause or the
        second after the last halving count as one) and hold every new request for
        ``retry_after`` seconds."""
        now = self._clock()
        with self._lock:
            if now >= self._calm_after:
                self._limit = max(1, self._limit // 2)
                self._calm_after = now + max(retry_after or 0.0, BURST_WINDOW_S)
            self._successes = 0
            if retry_after:
                self._pause_until = max(self._pause_until, now + retry_after)

    def succeeded(self) -> None:
        """A success: after ``recover_after`` in a row, allow one more request in flight."""
        with self._lock:
            self._successes += 1
            if self._limit < self.max_limit and self._successes >= self._recover_after:
                self._limit += 1
                self._successes = 0
                self._wake(self._limit - self._in_flight)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Budget:
    """Spent cost so far, and a cap that new work must not pass (None = no cap)."""

    def __init__(self, limit_usd: float | None) -> None:
        self.limit_usd = limit_usd
        self._spent = 0.0
        self._lock = threading.Lock()

    @property
    def spent_usd(self) -> float:
        return self._spent

    def check(self, next_cost_usd: float = 0.0) -> None:
        """Raise BudgetExceeded if spending ``next_cost_usd`` more would pass the cap."""
        if self.limit_usd is not None and self._spent + next_cost_usd > self.limit_usd:
            raise BudgetExceeded(
                f"budget of ${self.limit_usd:.4f} reached (spent ${self._spent:.4f}, next "
                f"request ≈ ${next_cost_usd:.4f}); remaining work was not started"
            )

    def add(self, cost_usd: float) -> None:
        with self._lock:
            self._spent += cost_usd
