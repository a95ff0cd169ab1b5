"""RequestLimiter and Budget: shared by every thread and event loop of a run."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time

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


# --- lost wake-ups, cancellation and real threads (regressions for 80036fe) -------------


def test_a_waiter_cancelled_just_after_its_wake_passes_the_wake_on() -> None:
    limiter = RequestLimiter(1)

    async def scenario() -> None:
        await limiter.acquire()
        first = asyncio.create_task(limiter.acquire())
        second = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)  # both queued, first in line
        limiter.release()  # wakes `first` …
        first.cancel()  # … which is cancelled before it runs (a TaskGroup cancelling siblings)
        with pytest.raises(asyncio.CancelledError):
            await first
        await asyncio.wait_for(second, 5)  # the wake went on to `second`
        limiter.release()

    asyncio.run(scenario())
    assert limiter.in_flight == 0 and limiter.waiting == 0


async def _random_round(rng: random.Random, limit: int, workers: int, fail: bool) -> None:
    """``workers`` tasks take a slot, hold it a few loop turns and release it, while the round
    cancels some of them at random moments (or one fails and its TaskGroup cancels the rest).
    Afterwards a fresh batch on the same limiter must get through: nothing was lost."""
    limiter = RequestLimiter(limit)
    held = {"now": 0, "peak": 0}
    completed: set[int] = set()

    async def turns(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    async def worker(i: int, failing: bool) -> None:
        await turns(rng.randint(0, 2))
        async with limiter.slot():
            held["now"] += 1
            held["peak"] = max(held["peak"], held["now"])
            try:
                await turns(rng.randint(0, 3))
                if failing:
                    raise ValueError("a chunk failed")
            finally:
                held["now"] -= 1
        completed.add(i)

    tasks = [asyncio.create_task(worker(i, False)) for i in range(workers)]  # e.g. another recording
    cancelled: set[int] = set()
    if fail:  # a recording whose chunk fails: its TaskGroup cancels its other chunks
        failing = rng.randrange(workers)
        with pytest.raises(ExceptionGroup):
            async with asyncio.TaskGroup() as group:
                for i in range(workers):
                    group.create_task(worker(-1 - i, i == failing))
    else:
        for _ in range(rng.randint(1, workers)):
            await turns(rng.randint(0, 3))
            i = rng.randrange(workers)
            if tasks[i].cancel():
                cancelled.add(i)
    _done, pending = await asyncio.wait(tasks, timeout=10)
    assert not pending, "a waiter is stuck while no slot is held"
    assert held["peak"] <= limit
    for i, task in enumerate(tasks):  # every acquisition not cancelled completed
        assert i in completed or (i in cancelled and task.cancelled())
    after = [asyncio.create_task(worker(1000 + i, False)) for i in range(workers)]
    _done, pending = await asyncio.wait(after, timeout=10)
    assert not pending, "the limiter lost a slot or a wake-up"
    assert held["peak"] <= limit
    assert limiter.in_flight == 0 and limiter.waiting == 0


@pytest.mark.parametrize("fail", [False, True], ids=["random-cancel", "taskgroup-failure"])
def test_random_cancellations_never_lose_a_wake_or_a_slot(fail: bool) -> None:
    rng = random.Random(20261129 + fail)

    async def rounds() -> None:
        for _ in range(3000):
            await _random_round(rng, rng.randint(1, 4), rng.randint(2, 10), fail)

    asyncio.run(rounds())


def _thread_storm(limiter: RequestLimiter, seed: int, state: dict, lock: threading.Lock, chaos: bool) -> None:
    """One thread with its own event loop, like a Prefect task thread: four recordings of ten
    chunks each, every recording a TaskGroup; a chunk fails now and then (its group cancels
    its siblings) and a few chunks are cancelled from outside."""
    rng = random.Random(seed)

    async def chunk(failing: bool) -> None:
        async with limiter.slot():
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            try:
                await asyncio.sleep(rng.choice((0, 0, 0.0005)))
                if chaos:
                    limiter.rate_limited(None) if rng.random() < 0.1 else limiter.succeeded()
                if failing:
                    raise ValueError("a chunk failed")
            finally:
                with lock:
                    state["now"] -= 1
        with lock:
            state["completed"] += 1

    async def recording() -> list[asyncio.Task[None]]:
        tasks: list[asyncio.Task[None]] = []
        with contextlib.suppress(ExceptionGroup):
            async with asyncio.TaskGroup() as group:
                tasks += [group.create_task(chunk(rng.random() < 0.04)) for _ in range(10)]
                for task in rng.sample(tasks, 2):
                    await asyncio.sleep(rng.choice((0, 0.0005)))
                    task.cancel()
        return tasks

    async def many() -> None:
        groups = await asyncio.gather(*(recording() for _ in range(4)))
        tasks = [t for group in groups for t in group]
        with lock:
            state["expected"] += sum(not t.cancelled() and t.exception() is None for t in tasks)

    asyncio.run(many())


@pytest.mark.parametrize("chaos", [False, True], ids=["fixed-limit", "429s-and-recovery"])
def test_one_limiter_shared_by_many_threads_each_with_its_own_loop(chaos: bool) -> None:
    for round_ in range(40):
        limiter = RequestLimiter(3, recover_after=2)
        lock = threading.Lock()
        state = {"now": 0, "peak": 0, "completed": 0, "expected": 0}
        threads = [
            threading.Thread(target=_thread_storm, args=(limiter, round_ * 100 + n, state, lock, chaos), daemon=True)
            for n in range(8)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30  # a bound for a hang, not a speed check (normally < 0.5 s)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "a thread's requests are stuck in the limiter"
        assert state["completed"] == state["expected"] > 0  # every acquisition not cancelled completed
        assert state["peak"] <= 3
        assert limiter.in_flight == 0 and limiter.waiting == 0
        assert 1 <= limiter.limit <= 3


def test_a_late_429_from_a_request_sent_before_the_cut_does_not_halve_again() -> None:
    """Eight requests sent together all meet the same storm, but their 429s come back over
    three seconds: one burst, one halving. A request sent after the cut that meets a 429
    halves again."""
    t = FakeTime()
    limiter = RequestLimiter(8, clock=t.clock, sleep=t.sleep)

    async def sent_then_429(after_s: float) -> None:
        async with limiter.slot():
            await asyncio.sleep(after_s / 1000)  # really: on the wire
        t.now = max(t.now, start + after_s)
        limiter.rate_limited(None)

    async def scenario() -> None:
        await asyncio.gather(*(sent_then_429(0.4 * i) for i in range(8)))

    start = t.now
    asyncio.run(scenario())
    assert limiter.limit == 4
    t.now += 0.1

    async def later() -> None:
        async with limiter.slot():
            pass
        limiter.rate_limited(None)

    asyncio.run(later())
    assert limiter.limit == 2
