"""No-op rescan benchmark, one command: `uv run python benchmarks/bench_rescan.py`.

Builds an archive of N tiny, distinct, already-transcribed WAV files (default 10 000): the
recordings, their four sidecars each, and catalog rows marking them done (written through
voxflow.io.catalog.CatalogWriter, as a real run would). Then measures, for a local folder and for a
bucket on a loopback S3 server (moto's standalone server; a smaller count by default, as every
object is uploaded through it):

  1. the first scan with an empty hash cache (every file read and hashed once);
  2. the nightly no-op rescan, in process: plan_run + run_inline (manifest written);
  3. the same as one CLI command, `voxflow transcribe SRC --out OUT` in a fresh process
     (Python start-up and imports included): the figure a user or a scheduler sees.

Prints seconds and milliseconds per file. The target: (3) for 10 000 local files ≤ 10 s.
Options: --count N (local), --s3-count N (bucket; 0 skips it), --profile (cProfile of (2)).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voxflow.io.catalog import CatalogWriter  # noqa: E402
from voxflow.io.outputs import OutputTree  # noqa: E402
from voxflow.io.storage import resolve  # noqa: E402
from voxflow.models import Recording, RecordingResult, Segment  # noqa: E402
from voxflow.settings import load_settings  # noqa: E402
from voxflow.subtitles import sidecar_name  # noqa: E402
from voxflow.transcribe import plan_run, run_inline, transcribe_options  # noqa: E402

FORMATS = ("srt", "vtt", "txt", "json")
SIDECAR = {
    "srt": "1\n00:00:00,000 --> 00:00:00,100\nhello\n",
    "vtt": "WEBVTT\n\n00:00:00.000 --> 00:00:00.100\nhello\n",
    "txt": "hello\n",
    "json": '{"text": "hello"}\n',
}


def tiny_wav(i: int) -> bytes:
    """0.1 s of 16 kHz mono: a tone whose pitch and noise depend on ``i`` (distinct bytes)."""
    rng = np.random.default_rng(i)
    t = np.arange(1600) / 16000
    signal = 0.3 * np.sin(2 * np.pi * (200 + i % 3000) * t) + 0.01 * rng.standard_normal(1600)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((signal * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def rel_path(i: int) -> str:
    return f"{2000 + i // 1000}/meeting-{i:05d}.wav"  # 1000 per folder, like a dated archive


def build_archive(src: str, out: str, count: int) -> None:
    """The recordings under ``src``; sidecars and catalog rows under ``out`` as after a run."""
    settings = load_settings(out=out)
    options_hash = transcribe_options(settings).digest()
    src_tree, out_tree = OutputTree(src), OutputTree(out)
    files: dict[str, bytes] = {}
    results = []
    now = time.time()
    for i in range(count):
        data, rel = tiny_wav(i), rel_path(i)
        files[src_tree.path(rel)] = data
        stem = rel.rsplit(".", 1)[0]
        for fmt in FORMATS:
            files[out_tree.path(f"{stem.rsplit('/', 1)[0]}/{sidecar_name(stem.rsplit('/', 1)[1], 'en', fmt)}")] = (
                SIDECAR[fmt].encode()
            )
        rec = Recording(src_tree.uri(rel), rel, len(data), 0.0, hashlib.sha256(data).hexdigest())
        results.append(
            RecordingResult(
                recording=rec,
                status="done",
                model=settings.transcription_model,
                options_hash=options_hash,
                duration_ms=100,
                language="en",
                text="hello",
                segments=(Segment(0, 100, "hello"),),
                started_at=now,
                finished_at=now,
            )
        )
    fs, _ = resolve(src)
    if src_tree.local:
        for path, data in files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(data)
    else:
        fs.pipe(files, batch_size=64)  # concurrent PUTs
    catalog = CatalogWriter(out_tree, "20240101T000000Z-bench0", flush_every=count + 1)
    for result in results:
        catalog.add_result(result)
    catalog.flush()


def timed(label: str, count: int, fn, *args):
    t0 = time.perf_counter()
    value = fn(*args)
    wall = time.perf_counter() - t0
    print(f"  {label:<52}{wall:>8.2f} s {1000 * wall / count:>8.3f} ms/file")
    return value, wall


def noop_run(src: str, out: str) -> None:
    plan = plan_run(src, load_settings(out=out))
    assert not plan.todo and not plan.restore and len(plan.skipped) == plan.found, (
        len(plan.todo),
        len(plan.restore),
        len(plan.skipped),
    )
    run_inline(plan)


def cli_run(src: str, out: str, env: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "voxflow.cli", "transcribe", src, "--out", out]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or "already done" not in proc.stderr:
        raise SystemExit(f"CLI run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def measure(kind: str, src: str, out: str, count: int, env: dict[str, str], profile: bool) -> dict[str, float]:
    print(f"{kind}: {count} files already transcribed ({count * 5} objects incl. sidecars)")
    _, build = timed("build the archive (not part of the figure)", count, build_archive, src, out, count)
    _, cold = timed("first scan, empty hash cache (reads every file)", count, noop_run, src, out)
    _, warm = timed("no-op rescan, in process (plan_run + run_inline)", count, noop_run, src, out)
    if profile:
        prof = cProfile.Profile()
        prof.runcall(noop_run, src, out)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    _, cli = timed("no-op rescan, `voxflow transcribe` CLI, new process", count, cli_run, src, out, env)
    return {"build": build, "cold": cold, "warm": warm, "cli": cli}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--s3-count", type=int, default=2_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    env = {**os.environ, "VOXFLOW_MODEL": "local/tiny.en"}
    env.pop("OPENROUTER_API_KEY", None)
    os.environ.update({"VOXFLOW_MODEL": "local/tiny.en"})
    os.environ.pop("OPENROUTER_API_KEY", None)
    figures = {}
    with tempfile.TemporaryDirectory(prefix="voxflow-bench-") as tmp:
        figures["local"] = measure("local folder", f"{tmp}/src", f"{tmp}/out", args.count, env, args.profile)
        if args.s3_count:
            from tests.s3server import S3Server, new_bucket

            with S3Server() as server:
                os.environ.update(server.env)
                os.environ["VOXFLOW_STATE_DIR"] = f"{tmp}/state"
                bucket = new_bucket("bench")
                figures["s3"] = measure(
                    "S3 bucket (moto server on 127.0.0.1)",
                    f"{bucket}/archive",
                    f"{bucket}/out",
                    args.s3_count,
                    {**env, **server.env, "VOXFLOW_STATE_DIR": f"{tmp}/state-cli"},
                    args.profile,
                )
        report(figures, {"local": args.count, "s3": args.s3_count})
        print("(removing the temporary archive …)", flush=True)


def report(figures: dict[str, dict[str, float]], counts: dict[str, int]) -> None:
    print("\nsummary (ms per file; the CLI figure includes Python start-up and imports, ≈ 1.2 s here)")
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("  note: PYTHONDONTWRITEBYTECODE is set: every import is compiled from source (≈ +1 s per CLI run)")
    print(f"  {'source':<8}{'files':>7}{'cold scan':>12}{'no-op':>10}{'no-op CLI':>12}{'CLI total':>12}")
    for kind, f in figures.items():
        n = counts[kind]
        print(
            f"  {kind:<8}{n:>7}{1000 * f['cold'] / n:>12.3f}{1000 * f['warm'] / n:>10.3f}"
            f"{1000 * f['cli'] / n:>12.3f}{f['cli']:>11.2f}s",
            flush=True,
        )
    local_cli, n = figures["local"]["cli"], counts["local"]
    verdict = "OK" if local_cli <= 10 or n < 10_000 else "TOO SLOW"
    print(f"target: no-op CLI rescan of {n} local files ≤ 10 s: {local_cli:.2f} s {verdict}", flush=True)


if __name__ == "__main__":
    main()
