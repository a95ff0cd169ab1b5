"""Scale-out: three worker processes over one bucket of 60 short real recordings, each taking
its share with ``--shard i/3`` (deterministic by recording id). Every recording is done exactly
once; a worker killed with SIGKILL mid-run leaves its share to the next run of that shard, and
still no recording is done twice. The workers run the job without Prefect (run_inline in
subprocesses) against the loopback S3 server; the catalog is read back by DuckDB from a synced
copy."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import duckdb
import numpy as np
import pytest

from tests.conftest import ROOT, SAMPLES
from tests.s3server import bucket, s3_server  # noqa: F401  (fixtures)
from voxflow.io.storage import resolve

N_CLIPS, N_SHARDS, RATE = 60, 3, 16_000
WORKER = """
import json, sys
from voxflow.settings import load_settings
from voxflow.transcribe import plan_run, run_inline
src, out, shard = sys.argv[1:4]
plan = plan_run(src, load_settings(out=out, shard=shard, formats="srt,json", local_threads=1))
print(json.dumps({"todo": len(plan.todo), "skipped": len(plan.skipped)}), flush=True)
summary = run_inline(plan)
print(json.dumps({"done": summary.done, "failed": summary.failed, "skipped": summary.skipped}), flush=True)
"""


def pcm(path: Path) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-ac", "1", "-ar", str(RATE), "-f", "s16le", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768


def make_clips(n: int) -> dict[str, bytes]:
    """``n`` distinct 1.5 s speech clips cut from the sample recordings (ffmpeg decodes them),
    each with a faint tone of its own so every clip has its own content hash."""
    sources = [pcm(SAMPLES / name) for name in ("jfk.flac", "beckett.wav", "spk1_snt1.wav", "spk1_snt3.wav")]
    clips = {}
    t = np.arange(int(1.5 * RATE)) / RATE
    for i in range(n):
        src = sources[i % len(sources)]
        start = (i // len(sources)) * int(0.35 * RATE) % max(1, len(src) - len(t))
        piece = src[start : start + len(t)]
        piece = np.pad(piece, (0, len(t) - len(piece))) + 0.004 * np.sin(2 * np.pi * (300 + 23 * i) * t)
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes((np.clip(piece, -1, 1) * 32767).astype("<i2").tobytes())
        clips[f"day-{i // 20}/clip-{i:02d}.wav"] = buffer.getvalue()
    return clips


def shard_of(data: bytes) -> int:
    return int(hashlib.sha256(data).hexdigest()[:12], 16) % N_SHARDS


def start_worker(src: str, out: str, shard: int, state: Path) -> subprocess.Popen[str]:
    """One worker process (its own local state folder, like a separate machine)."""
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, src, out, f"{shard}/{N_SHARDS}"],
        cwd=ROOT,
        env={**os.environ, "VOXFLOW_MODEL": "local/tiny.en", "VOXFLOW_STATE_DIR": str(state / f"machine-{shard}")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> dict:
    stdout, stderr = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, stderr[-3000:]
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {**lines[0], **lines[-1]}


def done_rows(out: str, tmp: Path) -> list[tuple[str, str, str]]:
    """(recording_id, rel_path, part file) of every `done` row, read by DuckDB from a synced copy."""
    fs, root = resolve(out)
    local = tmp / f"catalog-{time.monotonic_ns()}"
    fs.get(f"{root}/catalog/transcripts/", str(local), recursive=True)
    return duckdb.sql(
        f"select recording_id, rel_path, filename from read_parquet('{local}/*.parquet', filename=true) "
        "where status = 'done'"
    ).fetchall()


@pytest.mark.slow
def test_three_workers_one_bucket_no_duplicates_and_a_killed_worker_recovers(
    bucket: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    src, out = f"{bucket}/recordings", f"{bucket}/voxflow"
    clips = make_clips(N_CLIPS)
    assert len({hashlib.sha256(d).hexdigest() for d in clips.values()}) == N_CLIPS
    fs, src_root = resolve(src)
    fs.pipe({f"{src_root}/{rel}": data for rel, data in clips.items()})
    shares = {s: sorted(rel for rel, d in clips.items() if shard_of(d) == s) for s in range(N_SHARDS)}
    assert all(shares.values()), shares
    victim = max(shares, key=lambda s: len(shares[s]))  # the busiest worker is killed

    started = time.monotonic()
    workers = {s: start_worker(src, out, s, tmp_path) for s in range(N_SHARDS)}
    # kill the victim with SIGKILL once it has written some of its share, but not all of it
    out_root = resolve(out)[1]
    want = {f"{out_root}/{rel.rsplit('.', 1)[0]}.en.json" for rel in shares[victim]}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        written = want & set(fs.find(out_root))
        if len(written) >= 2 or workers[victim].poll() is not None:
            break
        time.sleep(0.2)
    assert workers[victim].poll() is None, "the victim finished before it could be killed"
    assert len(written) < len(want)
    workers[victim].send_signal(signal.SIGKILL)
    workers[victim].wait()
    assert workers[victim].returncode == -signal.SIGKILL
    for s in range(N_SHARDS):
        if s != victim:
            report = finish(workers[s])
            assert report["done"] == len(shares[s]) and report["failed"] == 0, report

    first_round = time.monotonic() - started
    rows = done_rows(out, tmp_path)
    assert len(rows) == N_CLIPS - len(shares[victim])
    assert not {r[1] for r in rows} & set(shares[victim]), "only the killed worker's share is missing"

    # the next run of the killed shard picks its whole share up; nothing is done twice
    started = time.monotonic()
    rerun = finish(start_worker(src, out, victim, tmp_path))
    rerun_s = time.monotonic() - started
    assert rerun["todo"] == len(shares[victim]) and rerun["done"] == len(shares[victim]), rerun
    rows = done_rows(out, tmp_path)
    ids = [r[0] for r in rows]
    assert len(rows) == N_CLIPS and len(set(ids)) == N_CLIPS, "a recording was done twice or lost"
    assert {r[1] for r in rows} == set(clips)
    writers = {Path(r[2]).name.split("-")[-2] for r in rows}  # part-<run_id>-<writer>-<n>.parquet
    assert writers == {f"s{s}of{N_SHARDS}" for s in range(N_SHARDS)}

    # a second round of all three is a no-op: still 60 done rows, no duplicates
    again = [start_worker(src, out, s, tmp_path) for s in range(N_SHARDS)]
    reports = [finish(p) for p in again]
    assert [r["todo"] for r in reports] == [0, 0, 0] and sum(r["skipped"] for r in reports) == N_CLIPS
    assert len(done_rows(out, tmp_path)) == N_CLIPS
    print(
        f"scale-out: 3 workers, {N_CLIPS} clips, shares {[len(v) for v in shares.values()]}: first round "
        f"{first_round:.1f} s (worker {victim} killed), its rerun {rerun_s:.1f} s"
    )
