"""RequestLimiter and Budget: shared by every thread and event loop of a run."""

from __future__ import annotations

import asyncio
import threading

import pytest

from voxflow.errors import BudgetExceeded
from voxflow.limits import Budget, RequestLimiter


class FakeTime:
    """An injectable clock and sleep: sleeping moves the clock, nobody waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def test_never_more_than_limit_in_flight_across_threads_and_loops() -> None:
    limiter = RequestLimiter(3)
    lock = threading.Lock()
    state = {"now": 0, "peak": 0, "done": 0}

    async def request() -> None:
        async with limiter.slot():
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            await asyncio.sleep(0.005)
            with lock:
                state["now"] -= 1
                state["done"] += 1

    async def many() -> None:
        await asyncio.gather(*(request() for _ in range(20)))

    threads = [threading.Thread(target=asyncio.run, args=(many(),)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert state["done"] == 60
    assert state["peak"] == 3 and limiter.peak_in_flight == 3
    assert limiter.in_flight == 0


def test_a_release_in_one_loop_wakes_a_waiter_in_another() -> None:
    limiter = RequestLimiter(1)
    held = threading.Event()
    order: list[str] = []

    async def holder() -> None:
        async with limiter.slot():
            held.set()
            await asyncio.sleep(0.05)
            order.append("holder done")

    async def waiter() -> None:
        held.wait(5)
        async with limiter.slot():
            order.append("waiter ran")

    a = threading.Thread(target=asyncio.run, args=(holder(),))
    b = threading.Thread(target=asyncio.run, args=(waiter(),))
    a.start()
    b.start()
    a.join(5)
    b.join(5)
    assert order == ["holder done", "waiter ran"]


def test_429_halves_the_limit_and_pauses_new_requests() -> None:
    t = FakeTime()
    limiter = RequestLimiter(8, clock=t.clock, sleep=t.sleep)
    limiter.rate_limited(2.5)
    assert limiter.limit == 4

    async def one() -> None:
        async with limiter.slot():
            pass

    asyncio.run(one())
    assert t.sleeps == [pytest.approx(2.5)]
    for _ in range(3):
        t.now += 1.0  # separate bursts
        limiter.rate_limited(None)  # no advice: halve, no pause
    assert limiter.limit == 1  # never below one
    t.sleeps.clear()
    asyncio.run(one())
    assert t.sleeps == []


def test_a_burst_of_429s_halves_once() -> None:
    t = FakeTime()
    limiter = RequestLimiter(16, clock=t.clock, sleep=t.sleep)
    for _ in range(10):
        limiter.rate_limited(0.5)  # ten requests hit by the same storm
    assert limiter.limit == 8
    t.now += 1.0
    limiter.rate_limited(0.5)  # a later storm
    assert limiter.limit == 4


def test_successes_raise_the_limit_back() -> None:
    t = FakeTime()
    limiter = RequestLimiter(8, recover_after=3, clock=t.clock)
    limiter.rate_limited(None)
    t.now += 1.0
    limiter.rate_limited(None)
    assert limiter.limit == 2
    for _ in range(3):
        limiter.succeeded()
    assert limiter.limit == 3
    for _ in range(100):
        limiter.succeeded()
    assert limiter.limit == 8  # never above the configured limit


def test_a_429_resets_the_success_streak() -> None:
    t = FakeTime()
    limiter = RequestLimiter(8, recover_after=3, clock=t.clock)
    limiter.rate_limited(None)
    limiter.succeeded()
    limiter.succeeded()
    t.now += 1.0
    limiter.rate_limited(None)
    limiter.succeeded()
    assert limiter.limit == 2


def test_growing_the_limit_wakes_waiters() -> None:
    limiter = RequestLimiter(2, recover_after=1)
    limiter.rate_limited(None)  # limit 1

    async def scenario() -> list[str]:
        order: list[str] = []
        await limiter.acquire()
        second = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0.01)
        assert not second.done()
        limiter.succeeded()  # limit back to 2: the waiter gets in while the first still holds
        await asyncio.wait_for(second, 1)
        order.append("both in")
        limiter.release()
        limiter.release()
        return order

    assert asyncio.run(scenario()) == ["both in"]
    assert limiter.in_flight == 0


def test_cancelled_waiter_leaves_no_trace() -> None:
    limiter = RequestLimiter(1)

    async def scenario() -> None:
        await limiter.acquire()
        waiter = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        limiter.release()
        await asyncio.wait_for(limiter.acquire(), 1)
        limiter.release()

    asyncio.run(scenario())
    assert limiter.in_flight == 0


def test_budget() -> None:
    budget = Budget(1.0)
    budget.check(0.5)
    budget.add(0.75)
    budget.check(0.25)  # exactly at the cap is allowed
    with pytest.raises(BudgetExceeded, match=r"\$1\.0000"):
        budget.check(0.3)
    assert budget.spent_usd == pytest.approx(0.75)


def test_budget_adds_up_across_threads() -> None:
    budget = Budget(None)
    threads = [threading.Thread(target=lambda: [budget.add(0.001) for _ in range(1000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert budget.spent_usd == pytest.approx(4.0)
    budget.check(1e9)  # no cap, never raises
