"""RequestLimiter and Budget: shared by every thread and event loop of a run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from pathlib import Path

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


# --- the budget reserves before sending (regressions for 80036fe) ----------------------


def test_a_budget_reached_with_nothing_in_flight_refuses_whatever_the_float_residue() -> None:
    """Estimates whose sum does not cancel exactly in binary floating point (0.1 + 0.2 - 0.1
    - 0.2 != 0) must not leave a phantom reservation that makes later requests wait forever."""

    async def scenario() -> str:
        budget = Budget(0.35)
        async with budget.reserve(0.1) as a, budget.reserve(0.2) as b:
            a.settle(0.1)
            b.settle(0.2)
        try:
            async with asyncio.timeout(2), budget.reserve(0.1):
                return "reserved past the cap"
        except BudgetExceeded:
            return "refused"
        except TimeoutError:
            return "waited forever for a request that is not in flight"

    assert asyncio.run(scenario()) == "refused"


def test_a_reservation_holds_its_estimate_until_it_settles_or_fails() -> None:
    budget = Budget(1.0)

    async def scenario() -> None:
        async with budget.reserve(0.6) as first:
            second = asyncio.create_task(budget.reserve(0.5).__aenter__())
            await asyncio.sleep(0.1)
            assert not second.done()  # 0.6 is out: 0.5 more waits to see what it costs
            first.settle(0.55)
        with pytest.raises(BudgetExceeded, match=r"\$1\.0000"):  # 0.55 spent: 0.5 never fits
            await second
        with pytest.raises(RuntimeError):
            async with budget.reserve(0.45):  # exactly at the cap: granted …
                raise RuntimeError("the request failed")  # … and given back
        async with budget.reserve(0.45) as third:
            third.settle(0.4)

    asyncio.run(scenario())
    assert budget.spent_usd == pytest.approx(0.95) and budget.reserved_usd == 0
    with pytest.raises(BudgetExceeded):
        budget.check(0.1)


def test_sixteen_threads_never_spend_past_the_cap_by_more_than_the_estimate_error() -> None:
    """16 threads, each with its own event loop, keep sending requests whose real cost is up
    to ``error`` above the estimate; some fail. The spend (summed by the test from what each
    request really cost) never passes the cap by more than the error of the requests in
    flight, and every thread is stopped by BudgetExceeded."""
    limit, estimate, error, threads_n = 0.5, 0.01, 0.002, 16
    lock = threading.Lock()
    spent = {"usd": 0.0, "stopped": 0}
    start = threading.Barrier(threads_n)

    async def client(budget: Budget, rng: random.Random) -> None:
        while True:
            try:
                async with budget.reserve(estimate) as reservation:
                    await asyncio.sleep(rng.choice((0, 0, 0.0002)))  # on the wire
                    if rng.random() < 0.1:
                        raise ConnectionError("the request failed: nothing billed")
                    cost = estimate + rng.uniform(0, error)
                    with lock:
                        spent["usd"] += cost
                    reservation.settle(cost)
            except ConnectionError:
                continue
            except BudgetExceeded:
                with lock:
                    spent["stopped"] += 1
                return

    def thread(budget: Budget, seed: int) -> None:
        start.wait()
        asyncio.run(client(budget, random.Random(seed)))

    for seed in range(20):
        budget = Budget(limit, poll_s=0.0005)
        spent.update(usd=0.0, stopped=0)
        threads = [threading.Thread(target=thread, args=(budget, seed * 100 + n)) for n in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert spent["stopped"] == threads_n
        assert spent["usd"] <= limit + threads_n * error + 1e-9
        assert spent["usd"] >= limit - estimate  # it did use the budget, up to the last request
        assert budget.spent_usd == pytest.approx(spent["usd"]) and budget.reserved_usd == pytest.approx(0)


def test_a_request_cancelled_in_flight_is_charged_its_estimate() -> None:
    budget = Budget(1.0)

    async def request() -> None:
        async with budget.reserve(0.3):
            await asyncio.sleep(10)

    async def scenario() -> None:
        task = asyncio.create_task(request())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert budget.spent_usd == pytest.approx(0.3) and budget.reserved_usd == 0


# --- the budget end to end: the flow at concurrency 8 against the emulator ---------------

EMULATOR_KEY = "sk-or-v1-test-0123456789abcdef-LIMITS"
AUDIO_TOKEN_USD = 0.00001  # the emulator's whisper-large-v3 price per audio token (10 a second)


def test_budget_holds_at_concurrency_8_end_to_end(prefect_harness: None, emulator, tmp_path: Path) -> None:
    """Six 20 s recordings in 4 s chunks ($0.0004 each), 8 requests in flight, a $0.003 cap:
    what the emulator billed (its own log) stays within the cap plus the estimate error of
    the chunks in flight (at most 2 × concurrency, each under one audio token), exit 3."""
    from typer.testing import CliRunner

    from tests.test_openrouter_flow import tones
    from voxflow.cli import app

    handle = emulator(EMULATOR_KEY, fast_text=True, latency_ms=300)
    tones(tmp_path / "in", 6, 20)
    out = tmp_path / "out"
    budget, concurrency = 0.003, 8
    args = ["transcribe", str(tmp_path / "in"), "--out", str(out), "--concurrency", str(concurrency)]
    result = CliRunner().invoke(app, [*args, "--budget-usd", str(budget)], env={"VOXFLOW_MAX_CHUNK_S": "4"})
    assert result.exit_code == 3, result.output
    billed = [e["cost"] for e in handle.log() if e["endpoint"] == "transcriptions" and e["status"] == 200]
    assert len(billed) >= 5, result.output
    assert sum(billed) <= budget + 2 * concurrency * AUDIO_TOKEN_USD + 1e-9, (len(billed), sum(billed))
    (manifest_path,) = (out / "runs").glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert "BudgetExceeded" in manifest["aborted"] and manifest["left_undone"]
    assert manifest["cost_usd"] <= budget + 2 * concurrency * AUDIO_TOKEN_USD + 1e-9
