"""One run per output at a time: real `voxflow transcribe` processes on one --out (flock), a
kill -9'd holder taken over, and the bucket lease (conditional PUTs) against a real S3 server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

from tests.conftest import ROOT, SAMPLES
from tests.s3server import S3Server, bucket, s3_server  # noqa: F401  (fixtures)
from voxflow.io.outputs import OutputTree
from voxflow.lock import OutputLocked, _Lease, output_lock
from voxflow.settings import load_settings

CLIPS = ("jfk.flac", "beckett.wav", "spk1_snt3.wav", "spk1_snt1.wav")


@pytest.fixture()
def clips(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in CLIPS:
        shutil.copy(SAMPLES / name, folder / name)
    return folder


def voxflow(args: list[str], home: Path, **env: str) -> subprocess.Popen[str]:
    """A real `voxflow` process with its own Prefect home (ephemeral Prefect per process)."""
    home.mkdir(parents=True, exist_ok=True)
    environ = {**os.environ, "PREFECT_HOME": str(home), "VOXFLOW_LOCAL_THREADS": "1", "COLUMNS": "1000", **env}
    code = "import sys; from voxflow.cli import main; sys.argv = ['voxflow', *sys.argv[1:]]; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def holder_of(lock: Path, proc: subprocess.Popen[str]) -> None:
    """Wait until ``proc`` has written itself into the lock file (fail if it ends first)."""
    while proc.poll() is None:
        try:
            if json.loads(lock.read_text() or "{}").get("pid") == proc.pid:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    pytest.fail(f"voxflow ended without holding {lock}: {proc.communicate()[0]}")


def done_rows(out: Path) -> list[tuple[str, int]]:
    return duckdb.sql(
        f"select rel_path, count(*) from read_parquet('{out}/catalog/transcripts/*.parquet') "
        "where status = 'done' group by rel_path order by rel_path"
    ).fetchall()


def test_a_second_run_on_the_same_output_exits_2_naming_the_holder(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = voxflow(["transcribe", str(clips), "--out", str(out)], tmp_path / "p1")
    holder_of(out / ".voxflow" / "lock", first)  # a loaded machine may not start them together
    runs = [first, voxflow(["transcribe", str(clips), "--out", str(out)], tmp_path / "p2")]
    said = [proc.communicate(timeout=600)[0] for proc in runs]
    codes = [proc.returncode for proc in runs]
    assert codes == [0, 2], said
    holder, refused = runs[0], said[1]
    line = [x for x in refused.splitlines() if "in use by another voxflow run" in x]
    assert len(line) == 1 and f"pid {holder.pid}," in line[0] and "--wait" in line[0], refused
    assert "Traceback" not in refused
    assert done_rows(out) == [(name, 1) for name in sorted(CLIPS)]


def test_with_wait_both_runs_succeed_and_each_file_is_done_once(clips: Path, tmp_path: Path) -> None:
    """A cron run overlapping a manual one: the second waits, then finds everything done."""
    out = tmp_path / "out"
    runs = [
        voxflow(["transcribe", str(clips), "--out", str(out)], tmp_path / f"p{n}", VOXFLOW_WAIT="1") for n in (1, 2)
    ]
    said = [proc.communicate(timeout=900)[0] for proc in runs]
    assert [proc.returncode for proc in runs] == [0, 0], said
    assert done_rows(out) == [(name, 1) for name in sorted(CLIPS)]
    waited = [n for n in (0, 1) if "waiting for" in said[n]]
    assert len(waited) == 1, said
    other = runs[1 - waited[0]]
    assert f"pid {other.pid}," in said[waited[0]] and f"{len(CLIPS)} already done" in said[waited[0]]


def test_the_lock_of_a_killed_run_is_taken_over(clips: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    victim = voxflow(["transcribe", str(clips), "--out", str(out)], tmp_path / "p1")
    holder_of(out / ".voxflow" / "lock", victim)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    after = voxflow(["transcribe", str(clips), "--out", str(out), "--wait"], tmp_path / "p2")
    said, _ = after.communicate(timeout=600)
    assert after.returncode == 0, said
    assert done_rows(out) == [(name, 1) for name in sorted(CLIPS)]


def test_local_lock_admits_one_holder_among_racing_processes(tmp_path: Path) -> None:
    """Many processes race for one output, many rounds: never two holders at once."""
    out = tmp_path / "out"
    marker = tmp_path / "inside"
    code = (
        "import os, sys, time\n"
        "from voxflow.lock import OutputLocked, output_lock\n"
        "from voxflow.settings import load_settings\n"
        f"s = load_settings(out={str(out)!r}, wait=True)\n"
        "for i in range(25):\n"
        "    with output_lock(s, f'r{os.getpid()}-{i}'):\n"
        f"        fd = os.open({str(marker)!r}, os.O_CREAT | os.O_EXCL)\n"  # fails if another is inside
        "        os.close(fd)\n"
        f"        os.unlink({str(marker)!r})\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(6)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err


# --- the bucket lease ---------------------------------------------------------------------------

HOLD = (
    "import sys, time\n"
    "from voxflow.lock import output_lock\n"
    "from voxflow.settings import load_settings\n"
    "with output_lock(load_settings(out=sys.argv[1], lock_lease_s=float(sys.argv[2])), 'held-run'):\n"
    "    print('held', flush=True)\n"
    "    time.sleep(600)\n"
)


@pytest.fixture()
def lease_holder(s3_server: S3Server) -> Iterator[Callable[[str, float], subprocess.Popen[str]]]:  # noqa: F811
    procs: list[subprocess.Popen[str]] = []

    def start(out: str, lease_s: float) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, out, str(lease_s)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bucket_lease_is_renewed_while_its_holder_lives(bucket: str, lease_holder) -> None:  # noqa: F811
    out = f"{bucket}/out"
    holder = lease_holder(out, 3)
    for _ in range(4):  # 8 s: well past the lease; the holder's heartbeat keeps it
        time.sleep(2)
        with (
            pytest.raises(OutputLocked, match=f"pid {holder.pid}, run held-run"),
            output_lock(load_settings(out=out, lock_lease_s=3), "second"),
        ):
            pass
    holder.send_signal(signal.SIGINT)  # an interrupted run releases the lease on its way out
    holder.wait()
    with output_lock(load_settings(out=out, lock_lease_s=3), "third"):
        pass


def test_bucket_lease_of_a_killed_run_expires_and_is_taken_over(
    bucket: str,  # noqa: F811
    lease_holder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = f"{bucket}/out"
    holder = lease_holder(out, 2)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    tree = OutputTree(out)
    with (
        caplog.at_level("WARNING", logger="voxflow.lock"),
        output_lock(load_settings(out=out, lock_lease_s=2, wait=True), "patient"),
    ):
        assert json.loads(tree.fs.cat_file(tree.path(".voxflow/lock.json")))["run_id"] == "patient"
    assert f"took over the expired lease of host {socket.gethostname()}, pid {holder.pid}, run held-run" in caplog.text
    assert not tree.fs.exists(tree.path(".voxflow/lock.json")), "released on exit"


def test_bucket_lease_admits_exactly_one_of_racing_takers(bucket: str) -> None:  # noqa: F811
    """Threads race with conditional PUTs for a free (then an expired) lease, many rounds."""
    settings = load_settings(out=f"{bucket}/race", lock_lease_s=1)
    for round_ in range(15):
        won = _race([_Lease(OutputTree(settings.out), settings) for _ in range(6)], f"r{round_}")
        assert len(won) == 1, f"round {round_}: {len(won)} holders"
        if round_ % 2:
            won[0].release()
        else:  # abandoned: its heartbeat stops, the lease must expire before anyone else gets in
            won[0]._stop.set()
            won[0]._beat.join()
            time.sleep(1.1)


def _race(leases: list[_Lease], run: str) -> list[_Lease]:
    """Every lease tries to acquire at the same moment; the ones that got it."""
    won: list[_Lease] = []
    start = threading.Barrier(len(leases))

    def take(lease: _Lease, n: int) -> None:
        start.wait()
        try:
            lease.acquire(f"{run}-{n}", time.sleep)
            won.append(lease)
        except OutputLocked:
            pass

    threads = [threading.Thread(target=take, args=(lease, n)) for n, lease in enumerate(leases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won
