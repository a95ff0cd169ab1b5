"""Buckets end to end against a real S3 server on 127.0.0.1 (moto's standalone server):
listing, streaming reads, sidecars + catalog + manifests written back to the bucket, ETag-keyed
hash cache, no-op reruns that rewrite nothing, late uploads, deletions; plus the settle interval
on file systems. Outputs are read back by independent readers (srt, pyarrow over s3fs, DuckDB on
a synced copy of the catalog)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pytest
import srt
from typer.testing import CliRunner

from tests.s3server import bucket, s3_server  # noqa: F401  (fixtures)
from voxflow.cli import app
from voxflow.errors import SourceError
from voxflow.io import hashes
from voxflow.io.hashes import content_hash
from voxflow.io.sources import list_source, scan
from voxflow.io.storage import local_copy, open_input, resolve, s3_storage_options
from voxflow.settings import load_settings
from voxflow.transcribe import plan_run, run_inline


def upload(folder: Path, url: str, names: dict[str, str] | None = None) -> None:
    """Upload every file of ``folder`` (or ``names``: local name → key) under ``url``."""
    fs, root = resolve(url)
    for local, key in (names or {p.name: p.name for p in folder.iterdir()}).items():
        fs.put_file(str(folder / local), f"{root}/{key}")


def snapshot(url: str) -> dict[str, tuple[str, object]]:
    """ETag and LastModified of every object under ``url``."""
    fs, root = resolve(url)
    return {p: (i["ETag"], i["LastModified"]) for p, i in fs.find(root, detail=True).items()}


def catalog_rows(out: str, tmp: Path) -> list[dict]:
    """The transcripts table read by DuckDB from a synced local copy of the bucket's catalog."""
    fs, root = resolve(out)
    local = tmp / f"catalog-{time.monotonic_ns()}"
    fs.get(f"{root}/catalog/", str(local), recursive=True)
    cursor = duckdb.connect().execute(
        f"select * from read_parquet('{local}/transcripts/*.parquet', union_by_name=true) order by rel_path, run_id"
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_aws_endpoint_comes_from_the_standard_variables(s3_server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    assert s3_storage_options()["endpoint_url"] == s3_server.url
    monkeypatch.setenv("VOXFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("VOXFLOW_S3_REGION", "eu-west-3")
    opts = s3_storage_options()
    assert opts["endpoint_url"] == "http://127.0.0.1:9" and opts["client_kwargs"] == {"region_name": "eu-west-3"}
    assert opts["use_listings_cache"] is False  # every scan sees the bucket as it is now


def test_bucket_listing_single_objects_missing_prefixes_and_streaming_reads(
    bucket: str,  # noqa: F811
    samples: Path,
) -> None:
    upload(samples, f"{bucket}/a", {"jfk.mp3": "x/jfk.mp3", "spk1_snt1.wav": ".hidden/skip.wav"})
    listing = list_source(f"{bucket}/a")
    assert [f.rel_path for f in listing.files] == ["x/jfk.mp3"] and listing.left_out == 1
    assert listing.files[0].version.startswith('"')  # the ETag, what the hash cache keys on
    one = scan(f"{bucket}/a/x/jfk.mp3")
    assert [r.rel_path for r in one.recordings] == ["jfk.mp3"] and one.listing.single_file
    with pytest.raises(SourceError, match="does not exist"):
        scan(f"{bucket}/nothing-here")
    data = (samples / "jfk.mp3").read_bytes()
    with open_input(f"{bucket}/a/x/jfk.mp3") as fh:
        assert fh.read(4) == data[:4]
    assert content_hash(f"{bucket}/a/x/jfk.mp3") == hashlib.sha256(data).hexdigest()
    assert content_hash(f"{bucket}/a/x/jfk.mp3", size=len(data)) == hashlib.sha256(data).hexdigest()
    with local_copy(f"{bucket}/a/x/jfk.mp3", suffix=".mp3") as path:
        assert Path(path).read_bytes() == data
    assert not Path(path).exists()
    with pytest.raises(SourceError, match="no longer exists"):
        content_hash(f"{bucket}/a/x/gone.mp3", size=10)


def test_bucket_to_bucket_transcription_reruns_and_late_uploads(
    bucket: str,  # noqa: F811
    samples: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src, out = f"{bucket}/archive", f"{bucket}/out"
    fs, _ = resolve(bucket)
    upload(samples, src, {"jfk.flac": "2024/jfk.flac", "beckett.wav": "beckett.wav", "spk1_snt3.wav": "spk1_snt3.wav"})
    fs.pipe_file(f"{src.removeprefix('s3://')}/notes.txt", b"not media")
    monkeypatch.setenv("VOXFLOW_STATE_DIR", str(tmp_path / "state-a"))
    settings = load_settings(out=out, settle_seconds=3600)  # objects appear whole: never wait

    plan = plan_run(src, settings)
    assert [r.rel_path for r in plan.todo] == ["2024/jfk.flac", "beckett.wav", "spk1_snt3.wav"]
    assert plan.unsettled == [] and plan.ignored == 1
    assert plan.todo[0].uri == f"{src}/2024/jfk.flac"
    summary = run_inline(plan)
    assert summary.exit_code == 0 and summary.done == 3, summary

    # sidecars in the bucket, source tree mirrored; read back with the srt library
    root = out.removeprefix("s3://")
    names = {p.removeprefix(root + "/") for p in fs.find(root)}
    assert {"2024/jfk.en.srt", "2024/jfk.en.vtt", "2024/jfk.en.txt", "2024/jfk.en.json"} <= names
    assert {"beckett.en.srt", "spk1_snt3.en.srt"} <= names
    cues = list(srt.parse(fs.cat_file(f"{root}/2024/jfk.en.srt").decode()))
    assert "ask not what your country" in " ".join(c.content for c in cues).lower().replace("\n", " ")
    assert not [n for n in names if n.endswith(".tmp")]
    manifest = json.loads(fs.cat_file(summary.manifest.removeprefix("s3://")))
    assert manifest["counts"]["done"] == 3 and manifest["deleted"] == []

    # the catalog, read by pyarrow through s3fs and by DuckDB from a synced copy
    parts = fs.glob(f"{root}/catalog/transcripts/*.parquet")
    table = ds.dataset(parts, format="parquet", filesystem=fs).to_table()
    assert sorted(table.column("status").to_pylist()) == ["done"] * 3
    rows = catalog_rows(out, tmp_path)
    assert [r["rel_path"] for r in rows] == ["2024/jfk.flac", "beckett.wav", "spk1_snt3.wav"]
    assert all(r["status"] == "done" and r["source_uri"].startswith(src) for r in rows)
    assert "fail better" in rows[1]["text"].lower()

    # a second run on a fresh machine (empty local state): nothing re-read, nothing rewritten
    before = snapshot(bucket)
    monkeypatch.setenv("VOXFLOW_STATE_DIR", str(tmp_path / "state-b"))
    with monkeypatch.context() as m:
        m.setattr(hashes, "content_hash", _refuse)
        again = plan_run(src, settings)
    assert (len(again.todo), len(again.skipped), len(again.restore)) == (0, 3, 0)
    noop = run_inline(again)
    assert noop.done == 0 and noop.skipped == 3
    after = snapshot(bucket)
    assert {k: v for k, v in after.items() if k in before} == before, "a no-op run rewrote objects"
    assert [k for k in after if k not in before] == [noop.manifest.removeprefix("s3://")]

    # the same bytes uploaded again (new LastModified, same ETag): still no re-read
    time.sleep(1.1)
    upload(samples, src, {"beckett.wav": "beckett.wav"})
    with monkeypatch.context() as m:
        m.setattr(hashes, "content_hash", _refuse)
        assert len(plan_run(src, settings).skipped) == 3

    # a file uploaded later is picked up by the next run alone
    before = snapshot(bucket)
    upload(samples, src, {"spk1_snt1.wav": "late/spk1_snt1.wav"})
    late = plan_run(src, settings)
    assert [r.rel_path for r in late.todo] == ["late/spk1_snt1.wav"] and len(late.skipped) == 3
    assert run_inline(late).done == 1
    after = snapshot(bucket)
    changed = sorted(k for k in before if k in after and after[k] != before[k])
    assert changed == [k for k in changed if "/.voxflow/hashes/" in k], changed  # only the hash cache
    new = {k.removeprefix(root + "/") for k in after if k not in before and k.startswith(root)}
    assert {"late/spk1_snt1.en.srt", "late/spk1_snt1.en.json"} <= new
    assert not [k for k in new if not k.startswith(("late/", "catalog/", "runs/", ".voxflow/"))]

    # a deleted recording is reported (manifest + summary); its catalog rows are kept
    fs.rm_file(f"{src.removeprefix('s3://')}/beckett.wav")
    gone = plan_run(src, settings)
    assert gone.deleted == [f"{src}/beckett.wav"] and len(gone.skipped) == 3
    summary = run_inline(gone)
    assert summary.deleted == 1
    assert json.loads(fs.cat_file(summary.manifest.removeprefix("s3://")))["deleted"] == [f"{src}/beckett.wav"]
    assert [r["rel_path"] for r in catalog_rows(out, tmp_path) if r["status"] == "done"].count("beckett.wav") == 1


def _refuse(uri: str, size: int | None = None) -> str:
    raise AssertionError(f"re-read {uri} although it did not change")


def test_beside_source_in_a_bucket(bucket: str, samples: Path) -> None:  # noqa: F811
    lib = f"{bucket}/videos"
    upload(samples, lib, {"jfk video.mp4": "Speech (1961)/Speech (1961).mp4"})
    settings = load_settings(out=f"{bucket}/voxflow", beside_source=True, formats="srt,vtt")
    assert run_inline(plan_run(lib, settings)).done == 1
    fs, root = resolve(lib)
    assert {p.rsplit("/", 1)[-1] for p in fs.find(root)} == {
        "Speech (1961).mp4",
        "Speech (1961).en.srt",
        "Speech (1961).en.vtt",
    }
    assert fs.glob(f"{bucket.removeprefix('s3://')}/voxflow/catalog/transcripts/*.parquet")
    again = plan_run(lib, settings)
    assert again.todo == [] and len(again.skipped) == 1


def test_cli_transcribes_a_bucket_through_the_flow(
    prefect_harness: None,
    bucket: str,  # noqa: F811
    samples: Path,
) -> None:
    upload(samples, f"{bucket}/in", {"spk1_snt3.wav": "spk1_snt3.wav", "spk1_snt1.wav": "spk1_snt1.wav"})
    args = ["transcribe", f"{bucket}/in", "--out", f"{bucket}/out", "--formats", "srt,json"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "2 to transcribe" in first.output
    fs, root = resolve(f"{bucket}/out")
    assert {p.removeprefix(root + "/") for p in fs.glob(f"{root}/*.en.*")} == {
        "spk1_snt1.en.srt",
        "spk1_snt1.en.json",
        "spk1_snt3.en.srt",
        "spk1_snt3.en.json",
    }
    doc = json.loads(fs.cat_file(f"{root}/spk1_snt1.en.json"))
    assert "small dog" in doc["text"].lower()
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0 and "2 already done" in second.output, second.output
    report = CliRunner().invoke(app, ["report", "--out", f"{bucket}/out"])
    assert report.exit_code == 0 and "done: 2" in report.output


def test_settle_interval_on_file_systems(samples: Path, tmp_path: Path) -> None:
    src = tmp_path / "incoming"
    src.mkdir()
    shutil.copy(samples / "spk1_snt3.wav", src / "old.wav")
    shutil.copy(samples / "spk1_snt1.wav", src / "copying.wav")
    an_hour_ago = time.time() - 3600
    os.utime(src / "old.wav", (an_hour_ago, an_hour_ago))
    result = scan(str(src), settle_seconds=60)
    assert [r.rel_path for r in result.recordings] == ["old.wav"]
    assert [r.rel_path for r in result.unsettled] == ["copying.wav"]
    plan = plan_run(str(src), load_settings(out=str(tmp_path / "out"), settle_seconds=60))
    assert [r.rel_path for r in plan.todo] == ["old.wav"] and len(plan.unsettled) == 1 and plan.found == 2
    summary = run_inline(plan)
    assert summary.unsettled == 1 and summary.done == 1
    manifest = json.loads(Path(summary.manifest).read_text())
    assert manifest["unsettled"] == ["copying.wav"] and manifest["counts"]["unsettled"] == 1
    os.utime(src / "copying.wav", (an_hour_ago, an_hour_ago))  # the copy finished long ago
    nxt = plan_run(str(src), load_settings(out=str(tmp_path / "out"), settle_seconds=60))
    assert [r.rel_path for r in nxt.todo] == ["copying.wav"] and nxt.unsettled == []


def test_deleted_local_recording_is_reported_and_rows_kept(clip_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    settings = load_settings(out=str(out), formats="txt")
    run_inline(plan_run(str(clip_dir), settings))
    (clip_dir / "beckett.wav").unlink()
    shutil.move(clip_dir / "jfk.flac", clip_dir / "moved.flac")  # moved, not deleted
    plan = plan_run(str(clip_dir), settings)
    assert plan.deleted == [str(clip_dir / "beckett.wav")]
    assert [r.rel_path for r, _ in plan.restore] == ["moved.flac"]
    assert run_inline(plan).deleted == 1
    rows = duckdb.sql(f"select rel_path from read_parquet('{out}/catalog/transcripts/*.parquet')").fetchall()
    assert ("beckett.wav",) in rows
