"""Runs on a real Dask cluster: a ``dask scheduler`` and two ``dask worker`` processes on
127.0.0.1, each in its own process group, and the real ``voxflow`` CLI with ``--cluster``.

Embedded engines only (faster-whisper ``local/tiny.en``, the offline Piper voice). The oracles
are independent of voxflow: the scheduler's own list of workers, the catalog read back by
DuckDB, subtitles parsed by ``srt``, words compared by jiwer with the clips' reference texts,
MP3s decoded by ffprobe. One test SIGKILLs a whole worker (nanny included) mid-run: the run
still ends with every item done exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import jiwer
import psutil
import pytest
import srt
from distributed import Client

from tests.conftest import ROOT, SAMPLES, ffmpeg, normal_words, reference_texts
from tests.test_errors_surface import refusal, voxflow

WHISPER = "local/tiny.en"
PIPER = "local/en_US-joe-medium"
WAIT_S = 300  # generous: the 2 cores here are shared by several agents
DASK = str(Path(sys.executable).with_name("dask"))

# ─── the cluster ─────────────────────────────────────────────────────────────────────────


@dataclass
class DaskCluster:
    """A scheduler and its workers, each a process group started by this test."""

    address: str
    groups: list[subprocess.Popen[bytes]]
    seen: dict[int, psutil.Process] = field(default_factory=dict)  # every process of every group

    def client(self) -> Client:
        return Client(self.address, timeout=60)

    def worker_addresses(self) -> set[str]:
        """The workers the scheduler knows now."""
        with self.client() as client:
            return set(client.scheduler_info()["workers"])

    def worker_pids(self) -> dict[str, int]:
        """Each worker's address → the pid of its worker process (asked of the workers themselves)."""
        with self.client() as client:
            return client.run(os.getpid)

    def remember_pids(self) -> None:
        for proc in self.groups:
            try:
                leader = psutil.Process(proc.pid)
                self.seen |= {p.pid: p for p in (leader, *leader.children(recursive=True))}
            except psutil.NoSuchProcess:
                pass

    def stacks(self, logs: Path) -> str:
        """Every thread of every worker process (faulthandler on SIGABRT), from their logs."""
        for process in self.seen.values():
            with contextlib.suppress(psutil.Error):
                if "spawn_main" in " ".join(process.cmdline()):  # a worker, not its nanny
                    process.send_signal(signal.SIGABRT)
        time.sleep(3)
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-6000:]}" for log in logs.glob("w*.log"))

    def survivors(self) -> list[str]:
        """The processes of this cluster still running 10 s after the kill (psutil tells a
        reused pid by its start time; a zombie is dead)."""
        _gone, alive = psutil.wait_procs(list(self.seen.values()), timeout=10)
        described = []
        for process in alive:
            with contextlib.suppress(psutil.Error):
                if process.status() != psutil.STATUS_ZOMBIE:  # dead, waiting for its parent to reap it
                    described.append(f"{process.pid} {process.status()} {' '.join(process.cmdline())}")
        return described


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [DASK, *args],
        cwd=log.parent,
        env={**env, "PYTHONFAULTHANDLER": "1"},  # SIGABRT dumps every thread (Run.wait on a hang)
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        start_new_session=True,  # its own process group: killpg reaches the nanny and its worker
    )


def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists() or not path.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"dask scheduler did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    time.sleep(0.2)  # the file is written whole, but be sure of it


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@contextlib.contextmanager
def running_cluster(folder: Path, env: dict[str, str], nthreads: int = 1) -> Iterator[DaskCluster]:
    """``dask scheduler`` + 2 ``dask worker`` on 127.0.0.1, ready; all killed after."""
    folder.mkdir()
    scheduler_file = folder / "scheduler.json"
    groups: list[subprocess.Popen[bytes]] = []
    cluster = DaskCluster("", groups)
    try:
        scheduler_log = folder / "scheduler.log"
        common = ["--no-dashboard", "--host", "127.0.0.1"]
        groups.append(_start(["scheduler", "--port", "0", "--scheduler-file", str(scheduler_file), *common],
                             scheduler_log, env))  # fmt: skip
        _wait_for_file(scheduler_file, groups[0], scheduler_log)
        cluster.address = json.loads(scheduler_file.read_text())["address"]
        assert cluster.address.startswith("tcp://127.0.0.1:")
        for n in range(2):
            worker = ["worker", cluster.address, "--nthreads", str(nthreads), "--nworkers", "1", "--name", f"w{n}"]
            groups.append(_start([*worker, "--local-directory", str(folder / f"w{n}"), *common],
                                 folder / f"worker{n}.log", env))  # fmt: skip
        with cluster.client() as client:
            client.wait_for_workers(2, timeout=120)
        cluster.remember_pids()
        yield cluster
    finally:
        cluster.remember_pids()
        for proc in reversed(groups):
            _kill_group(proc)
        assert cluster.survivors() == [], "dask processes left running"


@pytest.fixture()
def dask_cluster(tmp_path: Path) -> Iterator[DaskCluster]:
    """2 workers of 1 thread each, for the embedded engines."""
    with running_cluster(tmp_path / "dask", {**os.environ, "VOXFLOW_LOCAL_THREADS": "1"}) as cluster:
        yield cluster


def kill_worker(cluster: DaskCluster, address: str) -> None:
    """SIGKILL the whole process group (nanny and worker) of the worker at ``address``."""
    pid = cluster.worker_pids()[address]
    cluster.remember_pids()
    group = os.getpgid(pid)
    assert group in {p.pid for p in cluster.groups[1:]}, "not one of our workers"
    os.killpg(group, signal.SIGKILL)


# ─── the CLI ────────────────────────────────────────────────────────────────────────────


class Run:
    """One ``python -m voxflow.cli …`` process, as a user runs it, output captured to files.

    A run still going after WAIT_S is a hang: every thread of it (and of ``on_hang``'s
    processes) is dumped by Python's faulthandler (SIGABRT) into the failure message."""

    def __init__(
        self, args: list[str], folder: Path, env: dict[str, str] | None = None, on_hang: Callable[[], str] | None = None
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.stderr_path = folder / "stderr.txt"
        self.on_hang = on_hang
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxflow.cli", *args],
            cwd=ROOT,
            env={**os.environ, "VOXFLOW_LOCAL_THREADS": "1", "PYTHONFAULTHANDLER": "1", **(env or {})},
            stdout=(folder / "stdout.txt").open("wb"),
            stderr=self.stderr_path.open("wb"),
            start_new_session=True,
        )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self) -> int:
        try:
            return self.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            others = self.on_hang() if self.on_hang else ""
            self.proc.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
            pytest.fail(f"voxflow still running after {WAIT_S} s; its threads:\n{self.stderr[-8000:]}\n{others}")
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wait_for(condition: Callable[[], object], what: str, run: Run) -> object:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if found := condition():
            return found
        if run.proc.poll() is not None:
            pytest.fail(f"voxflow exited ({run.proc.returncode}) before {what}:\n{run.stderr[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def executing(client: Client) -> list[str]:
    """The workers running a task right now (asked of each worker, not of the scheduler)."""
    counts = client.run(lambda dask_worker: dask_worker.state.executing_count)
    return sorted(address for address, n in counts.items() if n)


def kill_a_busy_worker(cluster: DaskCluster, run: Run, finished: Callable[[], int], seed: int) -> str:
    """Once ``finished()`` ≥ 2 items (warm workers) and a worker is running a task, SIGKILL
    that worker a seeded fraction of a second later (a seeded choice among the busy ones);
    → its address."""
    rng = random.Random(seed)
    with cluster.client() as client:
        wait_for(lambda: finished() >= 2, "two items finished", run)
        chosen = rng.choice(wait_for(lambda: executing(client), "a task running on a worker", run))
    time.sleep(rng.uniform(0.2, 1.5))  # into the task, not at its first instruction
    kill_worker(cluster, chosen)
    return chosen


def catalog_rows(out: Path, table: str, columns: str) -> list[tuple]:
    return duckdb.sql(f"select {columns} from read_parquet('{out}/catalog/{table}/*.parquet')").fetchall()


# ─── transcription ──────────────────────────────────────────────────────────────────────

SPEECH = ("jfk.flac", "beckett.wav", "spk1_snt1.wav", "spk1_snt3.wav")


def make_recordings(folder: Path, count: int, joined: int = 1) -> dict[str, str]:
    """``count`` distinct recordings (stem → reference text): ``joined`` sample clips end to end,
    each file with its own length of silence after them, so no two files have the same audio."""
    folder.mkdir(parents=True)
    texts = reference_texts()
    made: dict[str, str] = {}
    for n in range(count):
        clips = [SPEECH[(n + k) % len(SPEECH)] for k in range(joined)]
        stem = f"rec{n:02d}"
        inputs = [arg for clip in clips for arg in ("-i", str(SAMPLES / clip))]
        streams = "".join(f"[{k}:a]aresample=16000,aformat=channel_layouts=mono[a{k}];" for k in range(joined))
        pad = f"apad=pad_dur={0.05 * (n + 1):.2f}"
        concat = "".join(f"[a{k}]" for k in range(joined)) + f"concat=n={joined}:v=0:a=1,{pad}"
        ffmpeg(*inputs, "-filter_complex", streams + concat, str(folder / f"{stem}.wav"))
        made[stem] = " ".join(texts[clip] for clip in clips)
    return made


def check_transcripts(out: Path, recordings: dict[str, str], max_wer: float) -> list[str]:
    """One done row per recording, its .srt parses, its words match the reference; → workers."""
    rows = catalog_rows(out, "transcripts", "rel_path, status, worker")
    done = sorted(rel for rel, status, _ in rows if status == "done")
    assert done == sorted(f"{stem}.wav" for stem in recordings), rows  # each once, none missing or twice
    assert len(rows) == len(recordings), rows  # and no other row (failed, retried) beside them
    for stem, reference in recordings.items():
        cues = list(srt.parse((out / f"{stem}.en.srt").read_text()))
        assert cues and all(c.end > c.start for c in cues), stem
        heard = normal_words(" ".join(c.content for c in cues))
        assert jiwer.wer(normal_words(reference), heard) <= max_wer, (stem, heard)
    return [worker for _, _, worker in rows]


def transcribe(source: Path, out: Path, cluster: DaskCluster, folder: Path) -> Run:
    args = ["transcribe", str(source), "--out", str(out), "--model", WHISPER, "--language", "en"]
    return Run([*args, "--cluster", cluster.address], folder)


@pytest.mark.timeout(420)
def test_recordings_spread_over_workers_each_done_once(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    recordings = make_recordings(tmp_path / "in", 8)
    out = tmp_path / "out"
    run = transcribe(tmp_path / "in", out, dask_cluster, tmp_path / "run")
    assert run.wait() == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    workers = check_transcripts(out, recordings, max_wer=0.35)
    addresses = dask_cluster.worker_addresses()
    assert len(addresses) == 2
    assert set(workers) == addresses, workers  # both workers used, every row names one of them


@pytest.mark.timeout(480)
@pytest.mark.parametrize("seed", [12])
def test_a_worker_killed_mid_run_loses_nothing(dask_cluster: DaskCluster, tmp_path: Path, seed: int) -> None:
    recordings = make_recordings(tmp_path / "in", 8, joined=2)
    out = tmp_path / "out"
    run = transcribe(tmp_path / "in", out, dask_cluster, tmp_path / "run")
    before = dask_cluster.worker_addresses()
    killed = kill_a_busy_worker(dask_cluster, run, lambda: len(list(out.glob("*.srt"))), seed)
    assert len(list(out.glob("*.srt"))) < len(recordings), "killed too late: the run was over"
    assert run.wait() == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    workers = check_transcripts(out, recordings, max_wer=0.35)
    assert dask_cluster.worker_addresses() == before - {killed}  # it did not come back
    assert set(workers) <= before, workers


# ─── narration ──────────────────────────────────────────────────────────────────────────

TOPICS = ("rivers", "lighthouses", "orchards", "trains", "bees", "glaciers")


def make_documents(folder: Path, count: int, paragraphs: int) -> list[str]:
    """``count`` short Markdown documents of ``paragraphs`` distinct paragraphs; → file names."""
    folder.mkdir(parents=True)
    names = []
    for n, topic in enumerate(TOPICS[:count]):
        body = "\n\n".join(
            f"This is paragraph {p + 1} about {topic}. It is spoken by the offline voice, "
            f"and document {n + 1} has its own words so that no two documents are alike."
            for p in range(paragraphs)
        )
        name = f"{topic}.md"
        (folder / name).write_text(f"# About {topic}\n\n{body}\n")
        names.append(name)
    return names


def audiobooks(out: Path) -> list[Path]:
    """The finished MP3s (the scratch space under .voxflow holds parts of unfinished ones)."""
    return list(out.glob("audiobooks/*/*.mp3"))


def check_narrations(out: Path, documents: list[str]) -> list[str]:
    """Every document done once (one done chapter row, no other row), MP3s decode; → workers."""
    rows = catalog_rows(out, "narrations", "rel_path, document_id, status, worker")
    assert sorted(rel for rel, _, status, _ in rows if status == "done") == sorted(documents), rows
    assert len(rows) == len(documents) and len({doc_id for _, doc_id, _, _ in rows}) == len(documents), rows
    for name in documents:
        mp3s = list((out / "audiobooks" / Path(name).stem).glob("*.mp3"))
        assert len(mp3s) == 1, (name, mp3s)
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(mp3s[0])],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert float(probe.stdout) > 5, name
        decode = subprocess.run(["ffmpeg", "-v", "error", "-i", str(mp3s[0]), "-f", "null", "-"], capture_output=True)
        assert decode.returncode == 0 and not decode.stderr, (name, decode.stderr)
    return [worker for *_, worker in rows]


def narrate(source: Path, out: Path, cluster: DaskCluster, folder: Path) -> Run:
    return Run(["narrate", str(source), "--out", str(out), "--model", PIPER, "--cluster", cluster.address], folder)


@pytest.mark.timeout(420)
def test_documents_spread_over_workers_each_done_once(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    documents = make_documents(tmp_path / "in", 4, paragraphs=2)
    out = tmp_path / "out"
    run = narrate(tmp_path / "in", out, dask_cluster, tmp_path / "run")
    assert run.wait() == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    workers = check_narrations(out, documents)
    assert set(workers) == dask_cluster.worker_addresses(), workers


@pytest.mark.timeout(480)
def test_a_worker_killed_mid_narration_loses_nothing(dask_cluster: DaskCluster, tmp_path: Path) -> None:
    documents = make_documents(tmp_path / "in", 5, paragraphs=2)
    out = tmp_path / "out"
    run = narrate(tmp_path / "in", out, dask_cluster, tmp_path / "run")
    before = dask_cluster.worker_addresses()
    killed = kill_a_busy_worker(dask_cluster, run, lambda: len(audiobooks(out)), seed=6)
    assert len(audiobooks(out)) < len(documents), "killed too late: the run was over"
    assert run.wait() == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    workers = check_narrations(out, documents)
    assert dask_cluster.worker_addresses() == before - {killed}
    assert set(workers) <= before, workers


# ─── settings ───────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("command", ["transcribe", "narrate"])
def test_a_cluster_that_is_not_an_address_is_refused_with_one_line(command: str, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    line = refusal(voxflow(command, str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--cluster", "nonsense"))
    assert "--cluster" in line and "nonsense" in line
    assert not (tmp_path / "out").exists()


# ─── OpenRouter's in-flight limit across workers ─────────────────────────────────────────

KEY = "sk-or-v1-cluster-test"


def peak_in_flight(log: list[dict]) -> int:
    """The most requests the emulator was serving at once, from its own log (arrival + duration)."""
    edges = sorted(
        edge
        for entry in log
        if entry["endpoint"] == "transcriptions" and entry.get("ms") is not None
        for edge in ((entry["t"], 1), (entry["t"] + entry["ms"] / 1000, -1))
    )
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


@pytest.mark.timeout(420)
def test_the_request_limit_holds_across_workers(tmp_path: Path) -> None:
    """--concurrency 2 with 2 workers of 4 threads each: the emulator never serves more than 2
    transcription requests at once (a distributed.Semaphore per run), and does serve 2."""
    from voxflow.testing.emulator import start_emulator_in_thread

    emulator = start_emulator_in_thread(keys=(KEY,), latency_ms=400, fast_text=True)
    env = {**os.environ, "VOXFLOW_LOCAL_THREADS": "1", "OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": emulator.url}
    try:
        with running_cluster(tmp_path / "dask", env, nthreads=4) as cluster:
            make_recordings(tmp_path / "in", 8, joined=2)
            args = ["transcribe", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--concurrency", "2"]
            keys = {k: env[k] for k in ("OPENROUTER_API_KEY", "OPENROUTER_BASE_URL")}
            args += ["--model", "openai/whisper-large-v3", "--language", "en", "--cluster", cluster.address]
            env = {**keys, "VOXFLOW_MAX_CHUNK_S": "3"}
            run = Run(args, tmp_path / "run", env, on_hang=lambda: cluster.stacks(tmp_path / "dask"))
            assert run.wait() == 0, run.stderr[-3000:]
            workers = {w for _, _, w in catalog_rows(tmp_path / "out", "transcripts", "rel_path, status, worker")}
            addresses = cluster.worker_addresses()
        log = emulator.state.log()
    finally:
        emulator.stop()
    assert workers == addresses, workers  # both workers sent requests
    assert len([e for e in log if e["endpoint"] == "transcriptions"]) >= 16
    assert peak_in_flight(log) == 2


# ─── the cluster-wide request limit, inside a worker ─────────────────────────────────────


def leases_left_after_a_cancelled_wait(name: str) -> int:
    """In a Dask worker: A holds the run's only lease; B waits for it and is cancelled (as a
    TaskGroup cancels the siblings of a failed chunk); A lets go. → the leases still held once
    things settle (0 when nothing leaked; B's waiting thread got the lease A freed)."""
    import asyncio

    from distributed import get_client

    from voxflow.cluster import ClusterLimiter

    def pending() -> int:
        def count(dask_scheduler: Any) -> int:
            return dask_scheduler.extensions["semaphores"].metrics["pending"][name]

        return get_client().run_on_scheduler(count)

    async def scenario() -> int:
        holder, waiter = ClusterLimiter(1, name), ClusterLimiter(1, name)  # as two processes have
        entered, leave = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            async with holder.slot():
                entered.set()
                await leave.wait()

        async def wait() -> None:
            async with waiter.slot():
                pass

        holding = asyncio.create_task(hold())
        await entered.wait()
        waiting = asyncio.create_task(wait())
        while await asyncio.to_thread(pending) < 1:  # B is in line at the scheduler
            await asyncio.sleep(0.05)
        waiting.cancel()
        leave.set()
        await holding
        deadline = asyncio.get_running_loop().time() + 30
        while (
            held := await asyncio.to_thread(holder._semaphore.get_value)
        ) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
        return held

    return asyncio.run(scenario())


@pytest.mark.timeout(240)
def test_a_wait_for_a_cluster_lease_cancelled_leaks_no_lease(tmp_path: Path) -> None:
    """A leaked lease is never freed (its worker refreshes it while it lives), and once the run's
    --concurrency leases have leaked every request of the run waits for ever."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with running_cluster(tmp_path / "dask", env, nthreads=2) as cluster, cluster.client() as client:
        held = client.submit(leases_left_after_a_cancelled_wait, "voxflow-requests-test", pure=False).result(
            timeout=120
        )
    assert held == 0, f"{held} lease(s) of the run still held by nobody"
