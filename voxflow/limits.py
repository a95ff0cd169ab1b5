"""Run-wide limits shared by every task and thread of a run.

:class:`RequestLimiter` caps in-flight engine requests across threads and event loops (each
Prefect task thread runs its own loop) and adapts: a 429 halves the limit and pauses new
requests for the advised ``Retry-After``, so a rate-limit storm slows the whole run; steady
successes raise it back (additive increase). :class:`Budget` reserves each request's
estimated cost before it is sent and settles the real cost after, so concurrent requests
cannot together pass ``--budget-usd``. Clock and sleep are injectable for tests.

Thread safety (docs/concurrency.md): every field of both classes is read-modified-written
under the instance's one ``threading.Lock``; nothing is awaited while it is held. A waiting
request is an ``asyncio.Future`` of its own loop, resolved only through that loop's
``call_soon_threadsafe``; no loop ever touches another loop's objects directly.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from voxflow.errors import BudgetExceeded

Sleep = Callable[[float], Awaitable[None]]
BURST_WINDOW_S = 1.0
# When the current task last got a slot: a 429 on a request sent before the last cut belongs
# to the burst that already halved the limit (asyncio gives each task its own context).
_slot_taken_at: contextvars.ContextVar[float | None] = contextvars.ContextVar("slot_taken_at", default=None)


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None] = field(repr=False)


class RequestLimiter:
    """At most ``limit`` requests in flight, shrinking on 429 and growing back on success.

    Wake-ups are counted: a waiter that is woken holds a *wake* until it takes its slot, goes
    back in line, or is cancelled; a cancelled one hands its wake to the next in line, so a
    TaskGroup cancelling the siblings of a failed chunk never strands the other waiters.
    Waiters are served first in, first out; newcomers do not overtake them.
    """

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
        self._woken = 0  # waiters woken that have not yet taken a slot or gone back in line
        self._pause_until = 0.0
        self._calm_after = 0.0  # without a send time: 429s before this belong to the last burst
        self._last_cut = float("-inf")  # when the limit was last halved
        self._successes = 0
        self._recover_after = recover_after
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._waiters: deque[_Waiter] = deque()
        self.peak_in_flight = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Requests in line for a slot (woken ones included)."""
        with self._lock:
            return len(self._waiters) + self._woken

    async def acquire(self) -> None:
        """Wait for a slot (and out any 429 pause); a cancelled wait takes nothing."""
        loop = asyncio.get_running_loop()
        woken = False  # this task holds one of self._woken
        try:
            while True:
                delay = self._pause_until - self._clock()
                if delay > 0:
                    await self._sleep(delay)
                    continue
                with self._lock:
                    waiter = self._take_or_queue(loop, woken)
                    woken = False
                if waiter is None:
                    _slot_taken_at.set(self._clock())
                    return
                await self._wait(waiter)
                woken = True
        except BaseException:
            if woken:  # cancelled between its wake and its slot: the wake goes on
                with self._lock:
                    self._woken -= 1
                    self._wake_free()
            raise

    def _take_or_queue(self, loop: asyncio.AbstractEventLoop, woken: bool) -> _Waiter | None:
        """Under the lock: take a slot (None), or get in line (the new waiter)."""
        if woken:
            self._woken -= 1
        free = self._in_flight + self._woken < self._limit
        if free and (woken or not self._waiters):
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            return None
        waiter = _Waiter(loop, loop.create_future())
        if woken:
            self._waiters.appendleft(waiter)  # it was first in line: it stays first
        else:
            self._waiters.append(waiter)
        self._wake_free()
        return waiter

    async def _wait(self, waiter: _Waiter) -> None:
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._lock:
                try:
                    self._waiters.remove(waiter)
                except ValueError:  # already woken: hand the wake on
                    self._woken -= 1
                    self._wake_free()
            raise

    def release(self) -> None:
        with self._lock:
            if self._in_flight <= 0:
                raise RuntimeError("RequestLimiter.release() without a matching acquire()")
            self._in_flight -= 1
            self._wake_free()

    def _wake_free(self) -> None:
        """Under the lock: wake as many waiters as there are slots nobody is woken for."""
        while self._waiters and self._in_flight + self._woken < self._limit:
            waiter = self._waiters.popleft()
            try:
                waiter.loop.call_soon_threadsafe(_resolve, waiter.future)
            except RuntimeError:  # its loop is closed: that waiter is gone
                continue
            self._woken += 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def rate_limited(self, retry_after: float | None, sent_at: float | None = None) -> None:
        """A 429: halve the limit once per burst and hold every new request for
        ``retry_after`` seconds.

        A 429 belongs to the burst that already halved the limit when its request was sent
        before that halving (``sent_at``, by default when the calling task last got a slot);
        without a send time, when it arrives within the pause or the second after the last
        halving. The limit never goes below one.
        """
        now = self._clock()
        sent_at = _slot_taken_at.get() if sent_at is None else sent_at
        with self._lock:
            new_burst = now >= self._calm_after if sent_at is None else sent_at > self._last_cut
            if new_burst:
                self._limit = max(1, self._limit // 2)
                self._last_cut = now
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
                self._wake_free()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Budget:
    """Spent and reserved cost, and a cap that new work must not pass (None = no cap).

    A request reserves its estimated cost before it is sent (:meth:`reserve`) and settles its
    real cost when it answered; so at any moment ``spent + reserved <= limit`` holds right
    after a reservation is granted, and the spend can pass the cap only by the estimate error
    of the requests in flight at the last grant (sum of ``actual - estimate`` where positive).
    """

    def __init__(self, limit_usd: float | None, *, sleep: Sleep = asyncio.sleep, poll_s: float = 0.02) -> None:
        self.limit_usd = limit_usd
        self._sleep = sleep
        self.poll_s = poll_s
        self._spent = 0.0
        self._reserved = 0.0
        self._holders = 0  # reservations not yet settled (a float sum never reliably returns to 0)
        self._lock = threading.Lock()

    @property
    def spent_usd(self) -> float:
        return self._spent

    @property
    def reserved_usd(self) -> float:
        return self._reserved

    @asynccontextmanager
    async def reserve(self, estimate_usd: float) -> AsyncIterator[Reservation]:
        """Hold ``estimate_usd`` against the cap while a request is out. When it does not fit
        beside the requests in flight, wait for them to settle (polling every
        ``poll_s``): a failed one gives its share back. BudgetExceeded once it cannot fit even
        with nothing in flight. Settle the real cost with ``reservation.settle(cost)``; a
        request that fails gives its reservation back, one cancelled while out is charged its
        estimate (it may have been billed)."""
        estimate = max(0.0, estimate_usd)
        while not self._try_reserve(estimate):
            await self._sleep(self.poll_s)
        reservation = Reservation(self, estimate)
        try:
            yield reservation
        except asyncio.CancelledError:
            reservation.settle(estimate)
            raise
        finally:
            reservation.settle(None)

    def _try_reserve(self, estimate: float) -> bool:
        """Under the lock: reserve (True), wait for the requests in flight (False), or refuse."""
        with self._lock:
            if self.limit_usd is not None and self._spent + self._reserved + estimate > self.limit_usd:
                if self._holders:
                    return False
                self._refuse_past_cap(estimate)
            self._reserved += estimate
            self._holders += 1
            return True

    def _settle(self, estimate: float, cost_usd: float | None) -> None:
        with self._lock:
            self._holders -= 1
            self._reserved = max(0.0, self._reserved - estimate) if self._holders else 0.0
            if cost_usd is not None:
                self._spent += cost_usd

    def check(self, next_cost_usd: float = 0.0) -> None:
        """Raise BudgetExceeded if spending ``next_cost_usd`` more would pass the cap (it
        reserves nothing: concurrent callers should use :meth:`reserve`)."""
        with self._lock:
            self._refuse_past_cap(next_cost_usd)

    def _refuse_past_cap(self, next_cost_usd: float) -> None:
        if self.limit_usd is not None and self._spent + self._reserved + next_cost_usd > self.limit_usd:
            raise BudgetExceeded(
                f"budget of ${self.limit_usd:.4f} reached (spent ${self._spent:.4f}, "
                f"${self._reserved:.4f} on requests in flight, next request ≈ ${next_cost_usd:.4f}); "
                "remaining work was not started"
            )

    def add(self, cost_usd: float) -> None:
        with self._lock:
            self._spent += cost_usd


class Reservation:
    """One request's hold on the budget; settled once (later calls do nothing)."""

    def __init__(self, budget: Budget, estimate_usd: float) -> None:
        self._budget = budget
        self.estimate_usd = estimate_usd
        self._settled = False

    def settle(self, cost_usd: float | None) -> None:
        """Replace the estimate by the real cost (None: nothing was spent)."""
        if not self._settled:
            self._settled = True
            self._budget._settle(self.estimate_usd, cost_usd)
