"""Parquet catalog written by pyarrow, read back by DuckDB; skip index and transcript rebuild."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import srt

from tests.conftest import SAMPLES
from tests.s3server import bucket, s3_server  # noqa: F401  (fixtures)
from voxflow.engines import base as engine_base
from voxflow.engines.base import TranscribeOptions
from voxflow.engines.local import LocalTranscriber
from voxflow.io.catalog import CatalogIndex, CatalogWriter, load_transcript
from voxflow.io.outputs import OutputTree
from voxflow.io.storage import resolve
from voxflow.models import AudioChunk, Recording, RecordingResult, Segment, Transcript, Word
from voxflow.reporting import catalog_report
from voxflow.settings import load_settings
from voxflow.transcribe import RunSummary, plan_run, run_inline


def _result(rid: str, status: str = "done", opts: str = "o1", finished: float = 0.0) -> RecordingResult:
    seg = Segment(0, 900, "Hello there.", (Word(0, 400, "Hello", 0.9), Word(450, 900, "there.", 0.8)))
    return RecordingResult(
        recording=Recording(f"/x/{rid}.wav", f"{rid}.wav", 10, recording_id=rid),
        status=status,
        model="local/tiny.en",
        options_hash=opts,
        duration_ms=1000,
        language="en",
        text="Hello there.",
        segments=(seg,),
        started_at=time.time(),
        finished_at=finished or time.time(),
        outputs=(f"/o/{rid}.en.srt",),
    )


def test_rows_are_readable_by_duckdb(tmp_path: Path) -> None:
    out = OutputTree(str(tmp_path))
    writer = CatalogWriter(out, "run1", flush_every=2)
    for rid in ("a", "b", "c"):
        writer.add_result(_result(rid))
    writer.flush()
    con = duckdb.connect()
    (count,) = con.execute(f"select count(*) from read_parquet('{tmp_path}/catalog/transcripts/*.parquet')").fetchone()
    assert count == 3
    assert len(list((tmp_path / "catalog" / "transcripts").glob("part-run1-*.parquet"))) == 2
    words = con.execute(
        f"select word, start_ms from read_parquet('{tmp_path}/catalog/words/*.parquet') "
        "where recording_id = 'b' order by seq"
    ).fetchall()
    assert words == [("Hello", 0), ("there.", 450)]


def test_index_keeps_latest_done_row_and_rebuilds_transcript(tmp_path: Path) -> None:
    out = OutputTree(str(tmp_path))
    first = CatalogWriter(out, "r1")
    first.add_result(_result("a", finished=1000.0))
    first.add_result(_result("z", status="failed"))
    first.flush()
    index = CatalogIndex.load(out)
    assert index.get("a", "o1") is not None and index.get("z", "o1") is None
    assert index.get("a", "other-options") is None
    rebuilt = load_transcript(out, index.get("a", "o1"))
    assert rebuilt.segments[0].words[1] == Word(450, 900, "there.", 0.8, None)


# --- end to end on the embedded engine: catalog read back by DuckDB, subtitles by `srt` ----------

CLIP = SAMPLES / "spk1_snt3.wav"


def _tokens(text: str) -> list[str]:
    """Words by a splitter of its own (not the code under test)."""
    return re.findall(r"[\w']+", text.lower())


def _run(src: Path, out: Path, **settings: object) -> RunSummary:
    return run_inline(plan_run(str(src), load_settings(out=str(out), **settings)))


def _rows(out: Path, sql: str) -> list[tuple]:
    """``sql`` over the catalog; ``{t}`` / ``{s}`` / ``{w}`` name the three tables."""
    tables = {k: f"read_parquet('{out}/catalog/{name}/*.parquet', union_by_name=true)" for k, name in
              (("t", "transcripts"), ("s", "segments"), ("w", "words"))}  # fmt: skip
    return duckdb.connect().execute(sql.format(**tables)).fetchall()


def _srt_tokens(path: Path) -> list[str]:
    cues = list(srt.parse(path.read_text(encoding="utf-8"), ignore_errors=False))
    assert cues, f"{path.name} has no cues"
    return _tokens(" ".join(c.content for c in cues))


def _latest_text(out: Path, rel_path: str) -> str:
    (text,) = _rows(out, f"select text from {{t}} where rel_path = '{rel_path}' and status = 'done' "
                         "order by finished_at desc limit 1")[0]  # fmt: skip
    return text


def _count_engine_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = LocalTranscriber.transcribe

    async def counting(self: LocalTranscriber, chunk: AudioChunk, options: TranscribeOptions) -> Transcript:
        calls[0] += 1
        return await original(self, chunk, options)

    monkeypatch.setattr(LocalTranscriber, "transcribe", counting)
    return calls


def _one_clip(tmp_path: Path, name: str = "clip.wav") -> tuple[Path, Path]:
    src = tmp_path / "in"
    src.mkdir(exist_ok=True)
    shutil.copy(CLIP, src / name)
    return src, tmp_path / "out"


# case 1: identical files in one run


def test_identical_files_are_transcribed_once_each_with_its_own_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, out = _one_clip(tmp_path, "a.wav")
    shutil.copy(CLIP, src / "b.wav")
    calls = _count_engine_calls(monkeypatch)
    summary = _run(src, out)
    assert summary.exit_code == 0 and summary.done == 2
    assert calls[0] == 1, "the same content was sent to the engine twice"
    rows = _rows(out, "select rel_path, source_uri, status, recording_id, run_id from {t} order by rel_path")
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("a.wav", str(src / "a.wav"), "done"),
        ("b.wav", str(src / "b.wav"), "done"),
    ]
    assert len({(r[3], r[4]) for r in rows}) == 1
    for table in ("s", "w"):
        [(n, distinct)] = _rows(out, f"select count(*), count(distinct seq) from {{{table}}}")
        assert n == distinct > 0, f"{table}: rows written twice"
    text = _latest_text(out, "a.wav")
    assert _srt_tokens(out / "a.en.srt") == _srt_tokens(out / "b.en.srt") == _tokens(text)


def test_restore_after_identical_files_writes_each_word_once(tmp_path: Path) -> None:
    src, out = _one_clip(tmp_path, "a.wav")
    shutil.copy(CLIP, src / "b.wav")
    _run(src, out, formats="srt")
    before = (out / "a.en.srt").read_text()
    (out / "a.en.srt").unlink()  # a deleted sidecar, a renamed file, a new format
    shutil.move(src / "b.wav", src / "renamed.wav")
    summary = _run(src, out, formats="srt,json")
    assert summary.exit_code == 0 and summary.restored == 2
    assert (out / "a.en.srt").read_text() == before
    assert _srt_tokens(out / "renamed.en.srt") == _tokens(_latest_text(out, "a.wav"))
    [(n_words,)] = _rows(out, "select count(distinct seq) from {w}")
    assert len(json.loads((out / "a.en.json").read_text())["words"]) == n_words


def test_restore_reads_one_version_from_an_old_doubled_catalog(tmp_path: Path) -> None:
    src, out = _one_clip(tmp_path)
    _run(src, out)
    for table in ("segments", "words"):  # what older versions wrote for two identical files
        (part,) = (out / "catalog" / table).glob("*.parquet")
        data = pq.read_table(part)
        pq.write_table(pa.concat_tables([data, data]), part)
    before = (out / "clip.en.srt").read_text()
    (out / "clip.en.srt").unlink()
    assert _run(src, out).restored == 1
    assert (out / "clip.en.srt").read_text() == before


# case 2: a crash between the catalog's part files


@pytest.mark.parametrize("parts_before_crash", [1, 2])
def test_crash_between_catalog_parts_never_gives_an_empty_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts_before_crash: int
) -> None:
    src, out = _one_clip(tmp_path)
    written = []
    original = OutputTree.write_bytes

    def crashing(self: OutputTree, rel: str, data: bytes) -> str:
        if rel.startswith("catalog/"):
            if len(written) == parts_before_crash:
                raise RuntimeError("killed between two part files")
            written.append(rel)
        return original(self, rel, data)

    monkeypatch.setattr(OutputTree, "write_bytes", crashing)
    with pytest.raises(RuntimeError):
        _run(src, out)
    monkeypatch.undo()
    (out / "clip.en.srt").unlink()
    assert _run(src, out).exit_code == 0
    assert _srt_tokens(out / "clip.en.srt") == _tokens(_latest_text(out, "clip.wav"))


def test_done_row_without_its_segments_is_redone_not_restored_empty(tmp_path: Path) -> None:
    src, out = _one_clip(tmp_path)
    _run(src, out)
    for part in (out / "catalog" / "segments").glob("*.parquet"):
        part.unlink()
    (out / "clip.en.srt").unlink()
    summary = _run(src, out)
    assert summary.exit_code == 0 and summary.done == 1 and summary.restored == 0
    assert _srt_tokens(out / "clip.en.srt") == _tokens(_latest_text(out, "clip.wav"))


# case 3: an unreadable part file


def _damage(part: Path, how: str) -> None:
    data = part.read_bytes()
    damaged = {
        "zero": b"",
        "garbage": os.urandom(700),
        "truncated": data[: len(data) // 2],
        "pages": data[:4] + b"\xa5" * 24 + data[28:],  # the first page header, footer intact
    }
    part.write_bytes(damaged[how])


@pytest.mark.parametrize("how", ["zero", "garbage", "truncated", "pages"])
@pytest.mark.parametrize("table", ["transcripts", "segments"])
def test_unreadable_part_is_quarantined_and_its_rows_redone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, table: str, how: str
) -> None:
    src, out = _one_clip(tmp_path)
    _run(src, out)
    (part,) = (out / "catalog" / table).glob("*.parquet")
    _damage(part, how)
    (out / "clip.en.srt").unlink()
    with caplog.at_level(logging.WARNING, logger="voxflow"):
        summary = _run(src, out)
    assert summary.exit_code == 0 and summary.done == 1
    assert not part.exists()
    assert [p.name for p in (out / "catalog" / "_quarantine").iterdir()] == [f"{table}-{part.name}"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and part.name in warned[0] and "redone" in warned[0]
    assert _srt_tokens(out / "clip.en.srt") == _tokens(_latest_text(out, "clip.wav"))


def test_report_quarantines_an_unreadable_part(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src, out = _one_clip(tmp_path)
    _run(src, out)
    (out / "catalog" / "transcripts" / "part-x-w0-0001.parquet").write_bytes(b"PAR1 not really")
    (out / "catalog" / "words" / "part-x-w0-0001.parquet").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="voxflow"):
        text = catalog_report(str(out))
    assert "recordings: 1  done: 1" in text
    quarantined = sorted(p.name for p in (out / "catalog" / "_quarantine").iterdir())
    assert quarantined == ["transcripts-part-x-w0-0001.parquet", "words-part-x-w0-0001.parquet"]
    assert sum("part-x-w0-0001.parquet" in r.getMessage() for r in caplog.records) == 2
    for table in ("transcripts", "segments", "words"):  # DuckDB reads what is left
        assert _rows(out, f"select count(*) from {{{table[0]}}}")[0][0] > 0


# case 4: options_hash


CHANGES: dict[str, object] = {
    "max_chunk_s": 30.0,
    "silence_db": -45.0,
    "min_silence_s": 0.6,
    "model": "local/base",
    "language": "en",
    "temperature": 0.3,
    "diarize": True,
    "keyterms": ("Harvard",),
}


def test_every_setting_that_changes_the_transcript_redoes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, out = _one_clip(tmp_path)
    _run(src, out)
    for name, value in CHANGES.items():
        plan = plan_run(str(src), load_settings(out=str(out), **{name: value}))
        assert [r.rel_path for r in plan.todo] == ["clip.wav"], f"changing {name} did not redo the recording"
    for same in ({}, {"formats": "srt"}, {"concurrency": 2}):
        plan = plan_run(str(src), load_settings(out=str(out), **same))
        assert plan.todo == [] and len(plan.skipped) == 1, same
    monkeypatch.setattr(engine_base, "PIPELINE_VERSION", engine_base.PIPELINE_VERSION + 1)
    assert len(plan_run(str(src), load_settings(out=str(out))).todo) == 1


# case 5: any file name the file system allows


NAMES = [b"bad\xff\xfe.wav", b"-dash.wav", b"new\nline.wav", b"x" * 251 + b".wav", b"sub\xfe/inner.wav"]


def test_any_file_name_round_trips_through_catalog_sidecars_and_rerun(tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    data = CLIP.read_bytes()
    for i, name in enumerate(NAMES):
        path = os.fsencode(src) + b"/" + name
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data + b"\0" * (2 * i))  # distinct content, same audio
    summary = _run(src, out)
    assert summary.exit_code == 0 and summary.done == len(NAMES), summary.failures
    rows = _rows(out, "select rel_path, rel_path_bytes, source_uri_bytes, status from {t}")
    assert sorted(r[1] for r in rows) == sorted(NAMES)
    for rel, raw, uri, status in rows:
        assert status == "done" and rel == raw.decode("utf-8", "backslashreplace")
        assert uri == os.fsencode(src) + b"/" + raw
    for name in NAMES:
        folder, _, base = (b"/" + name).rpartition(b"/")
        listing = os.listdir(os.fsencode(out) + folder)
        stem = base.rsplit(b".", 1)[0]
        sidecars = [n for n in listing if n.endswith(b".en.srt") and n.startswith(stem[:40])]
        assert len(sidecars) == 1 and len(sidecars[0]) <= 255, (name, listing)
        assert _srt_tokens(Path(os.fsdecode(os.fsencode(out) + folder + b"/" + sidecars[0])))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    (manifest,) = (out / "runs").glob("*.json")
    json.loads(manifest.read_bytes().decode("utf-8"))
    plan = plan_run(str(src), load_settings(out=str(out)))
    assert (plan.todo, plan.restore, len(plan.skipped), plan.deleted) == ([], [], len(NAMES), [])


@pytest.mark.parametrize("table", ["transcripts", "segments"])
def test_unreadable_part_in_a_bucket_is_quarantined(
    bucket: str,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    table: str,
) -> None:
    monkeypatch.setenv("VOXFLOW_STATE_DIR", str(tmp_path / "state"))
    src, _ = _one_clip(tmp_path)
    out = f"{bucket}/out"
    fs, root = resolve(out)
    run_inline(plan_run(str(src), load_settings(out=out)))
    (part,) = fs.glob(f"{root}/catalog/{table}/*.parquet")
    fs.pipe_file(part, b"PAR1" + os.urandom(300))
    fs.rm_file(f"{root}/clip.en.srt")
    with caplog.at_level(logging.WARNING, logger="voxflow"):
        summary = run_inline(plan_run(str(src), load_settings(out=out)))
    assert summary.exit_code == 0 and summary.done == 1
    name = part.rsplit("/", 1)[-1]
    assert fs.find(f"{root}/catalog/_quarantine") == [f"{root}/catalog/_quarantine/{table}-{name}"]
    assert not fs.exists(part)
    assert sum(name in r.getMessage() for r in caplog.records) == 1
    cues = list(srt.parse(fs.cat_file(f"{root}/clip.en.srt").decode("utf-8")))
    assert _tokens(" ".join(c.content for c in cues)) == _tokens(summary_text(out))


def summary_text(out: str) -> str:
    """The latest done text, read from the bucket's catalog by pyarrow over s3fs."""
    fs, root = resolve(out)
    rows = ds.dataset(fs.glob(f"{root}/catalog/transcripts/*.parquet"), format="parquet", filesystem=fs).to_table()
    done = [r for r in rows.to_pylist() if r["status"] == "done"]
    return max(done, key=lambda r: r["finished_at"])["text"]
