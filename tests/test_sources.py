"""Scanning and writing through fsspec: order, hidden files, sniffing, hash cache, atomicity."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import srt

from tests.conftest import ROOT, cli_run
from voxflow.errors import ConfigError, SourceError
from voxflow.io.hashes import HashCache, content_hash
from voxflow.io.outputs import OutputTree
from voxflow.io.sources import scan
from voxflow.narrate import scan_documents
from voxflow.settings import load_settings
from voxflow.transcribe import plan_run, run_inline


def test_scan_is_recursive_sorted_and_skips_hidden_and_output(samples: Path, tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "b" / "deep").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "out").mkdir()
    shutil.copy(samples / "jfk.mp3", root / "b" / "deep" / "z.mp3")
    shutil.copy(samples / "spk1_snt1.wav", root / "a.wav")
    shutil.copy(samples / "spk1_snt1.wav", root / ".hidden.wav")
    shutil.copy(samples / "spk1_snt1.wav", root / ".git" / "x.wav")
    shutil.copy(samples / "spk1_snt1.wav", root / "out" / "old.wav")
    shutil.copy(samples / "spk1_snt1.wav", root / "noextension")
    (root / "readme.txt").write_text("hello")
    (root / "mystery.dat").write_text("plain text, not media")
    result = scan(str(root), exclude=str(root / "out"))
    assert [r.rel_path for r in result.recordings] == ["a.wav", "b/deep/z.mp3", "noextension"]
    assert result.ignored == 5


def test_scan_single_file_and_missing_source(samples: Path, tmp_path: Path) -> None:
    one = scan(str(samples / "jfk.flac"))
    assert [r.rel_path for r in one.recordings] == ["jfk.flac"]
    with pytest.raises(SourceError, match="does not exist"):
        scan(str(tmp_path / "nope"))


def test_hash_cache_skips_rereading_unchanged_files(samples: Path, tmp_path: Path) -> None:
    folder = tmp_path / "s"
    folder.mkdir()
    shutil.copy(samples / "jfk.mp3", folder / "a.mp3")
    cache_file = tmp_path / "hashes.json"
    rec = scan(str(folder)).recordings[0]
    first = HashCache(cache_file)
    hashed = first.hashed(rec)
    first.save()
    assert hashed.recording_id == content_hash(rec.uri)
    (folder / "a.mp3").chmod(0)  # unreadable now; the cache must not need to read it
    try:
        assert HashCache(cache_file).hashed(rec).recording_id == hashed.recording_id
    finally:
        (folder / "a.mp3").chmod(0o644)


def test_output_tree_writes_atomically(tmp_path: Path) -> None:
    tree = OutputTree(str(tmp_path / "o"))
    uri = tree.write_text("x/y.srt", "1\n")
    assert Path(uri).read_text() == "1\n" and tree.exists("x/y.srt")
    assert [p.name for p in (tmp_path / "o" / "x").iterdir()] == ["y.srt"]


# --- special files, sparse files, output folder, symlinks, empty source ------------------------


def _special_files(folder: Path) -> dict[str, str]:
    """Real FIFOs, a socket and device symlinks in ``folder``; rel_path → expected reason."""
    os.mkfifo(folder / "a.wav")
    os.mkfifo(folder / "noextension")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "s.wav"))
    server.close()  # the socket file stays
    (folder / "zero.wav").symlink_to("/dev/zero")
    (folder / "null").symlink_to("/dev/null")
    return {
        "a.wav": "named pipe (FIFO)",
        "noextension": "named pipe (FIFO)",
        "s.wav": "socket",
        "zero.wav": "character device",
        "null": "character device",
    }


@pytest.mark.timeout(60)
def test_fifos_sockets_and_devices_are_skipped_never_opened(samples: Path, tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    shutil.copy(samples / "spk1_snt3.wav", src / "good.wav")
    expected = _special_files(src)
    result = scan(str(src))
    assert [r.rel_path for r in result.recordings] == ["good.wav"]
    assert dict(result.skipped) == expected
    cache = HashCache(None)
    for rec in result.recordings:
        assert cache.hashed(rec).recording_id == hashlib.sha256((src / "good.wav").read_bytes()).hexdigest()
    docs, _ = scan_documents(str(src))  # the narration corpus scan shares the listing
    assert docs == []
    with pytest.raises(SourceError, match="named pipe"):
        scan(str(src / "a.wav"))
    with pytest.raises(SourceError, match="not a regular file"):
        content_hash(str(src / "zero.wav"))


def _run_python(script: str, timeout: float = 300, **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs
    )


@pytest.mark.timeout(180)
def test_a_planned_run_over_special_files_finishes(samples: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "s", tmp_path / "out"
    src.mkdir()
    shutil.copy(samples / "spk1_snt3.wav", src / "good.wav")
    shutil.copy(samples / "spk1_snt1.wav", src / "good2.wav")  # two to hash: the threaded prefetch runs
    expected = _special_files(src)
    script = (
        "import json; from voxflow.settings import load_settings; from voxflow.io.sources import scan;"
        "from voxflow.transcribe import plan_run;"
        f"p = plan_run({str(src)!r}, load_settings(out={str(out)!r}));"
        f"s = scan({str(src)!r});"
        "print(json.dumps([[r.rel_path for r in p.todo], [r.recording.rel_path for r in p.failed], s.skipped]))"
    )
    proc = _run_python(script, timeout=120)  # a hang is killed and fails here
    assert proc.returncode == 0, proc.stderr
    todo, failed, skipped = json.loads(proc.stdout.splitlines()[-1])
    assert todo == ["good.wav", "good2.wav"] and failed == []
    assert {rel: why for rel, why in skipped} == expected


def _rchar(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


@pytest.mark.timeout(300)
def test_a_sparse_20_gb_file_is_refused_without_being_read(tmp_path: Path) -> None:
    src, out = tmp_path / "s", tmp_path / "out"
    src.mkdir()
    subprocess.run(["truncate", "-s", "20G", str(src / "big.wav")], check=True)
    (src / "notes.mp3").write_text("This is a text file that only pretends to be an MP3.\n" * 20)
    script = (
        "import sys; from voxflow.settings import load_settings;"
        "from voxflow.transcribe import plan_run, run_inline;"
        f"s = run_inline(plan_run({str(src)!r}, load_settings(out={str(out)!r})));"
        "print(s.exit_code, flush=True); sys.stdin.readline()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        code = proc.stdout.readline().strip()
        read = _rchar(proc.pid)  # the kernel's count of bytes this process read, all files included
        proc.communicate("\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == "1", proc.stderr
    assert read < 300 * 1024 * 1024, f"read {read / 2**30:.1f} GiB"
    rows = duckdb.connect().execute(
        f"select rel_path, status, error_kind, error_message "
        f"from read_parquet('{out}/catalog/transcripts/*.parquet') order by rel_path"
    )
    rows = {r[0]: r[1:] for r in rows.fetchall()}
    assert rows["big.wav"][:2] == ("failed", "AudioError")
    assert "not an audio/video file" in rows["big.wav"][2] and "big.wav" in rows["big.wav"][2]
    assert rows["notes.mp3"][:2] == ("failed", "AudioError")


def _done_rows(out: Path) -> list[tuple[str, str]]:
    query = f"select rel_path, status from read_parquet('{out}/catalog/transcripts/*.parquet') order by all"
    return duckdb.connect().execute(query).fetchall()


@pytest.mark.timeout(900)
def test_out_equal_to_or_a_parent_of_the_source(samples: Path, tmp_path: Path, prefect_api: str) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(samples / "spk1_snt3.wav", lib / "clip.wav")
    (lib / "audiobooks" / "book").mkdir(parents=True)  # an earlier narration's output: not a recording
    shutil.copy(samples / "jfk.mp3", lib / "audiobooks" / "book" / "book.mp3")
    first = cli_run("transcribe", str(lib), "--out", str(lib), "--formats", "srt", prefect_api=prefect_api)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "found 1 recording: 1 to transcribe" in " ".join((first.stdout + first.stderr).split())
    sidecar = lib / "clip.en.srt"
    cues = list(srt.parse(sidecar.read_text()))
    assert cues and "pure" in " ".join(c.content for c in cues).lower()
    lock = lib / ".voxflow" / "lock"  # says who holds the output: each run writes itself in
    before = {p: p.stat().st_mtime_ns for p in lib.rglob("*") if p.is_file() and "runs" not in p.parts and p != lock}
    again = cli_run("transcribe", str(lib), "--out", str(lib), "--formats", "srt", prefect_api=prefect_api)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 to transcribe, 1 already done" in " ".join((again.stdout + again.stderr).split())
    after = {p: p.stat().st_mtime_ns for p in lib.rglob("*") if p.is_file() and "runs" not in p.parts and p != lock}
    assert after == before, "a rerun changed files"
    assert _done_rows(lib) == [("clip.wav", "done")]

    parent = tmp_path / "parent"
    (parent / "rec").mkdir(parents=True)
    shutil.copy(samples / "spk1_snt3.wav", parent / "rec" / "clip.wav")
    up = cli_run("transcribe", str(parent / "rec"), "--out", str(parent), "--formats", "srt", prefect_api=prefect_api)
    assert up.returncode == 0, up.stdout + up.stderr
    assert list(srt.parse((parent / "clip.en.srt").read_text()))
    assert _done_rows(parent) == [("clip.wav", "done")]


def _symlinked_library(samples: Path, tmp_path: Path) -> tuple[Path, Path]:
    src, outside = tmp_path / "src", tmp_path / "elsewhere"
    (src / "sub").mkdir(parents=True)
    outside.mkdir()
    shutil.copy(samples / "spk1_snt3.wav", src / "sub" / "real.wav")
    shutil.copy(samples / "spk1_snt1.wav", outside / "private.wav")
    (src / "alias").symlink_to(src / "sub")  # inside: the same folder twice
    (src / "away").symlink_to(outside)  # a folder outside the source
    (src / "away.wav").symlink_to(outside / "private.wav")  # a file outside the source
    (src / "loop").symlink_to(src)  # back to the root
    (src / "ping").symlink_to(src / "pong")
    (src / "pong").symlink_to(src / "ping")
    (src / "gone.wav").symlink_to(tmp_path / "missing.wav")
    return src, outside


@pytest.mark.timeout(300)
def test_symlinks_never_lead_out_of_the_source(samples: Path, tmp_path: Path, monkeypatch) -> None:
    src, outside = _symlinked_library(samples, tmp_path)
    result = scan(str(src))
    assert [r.rel_path for r in result.recordings] == ["sub/real.wav"]
    assert dict(result.skipped) == {
        "alias": "folder already listed",
        "away": "symlink out of the source",
        "away.wav": "symlink out of the source",
        "loop": "folder already listed",
        "ping": "symlink loop",
        "pong": "symlink loop",
        "gone.wav": "broken symlink",
    }
    settings = load_settings(out=str(tmp_path / "out"), beside_source=True, formats="srt")
    summary = run_inline(plan_run(str(src), settings))
    assert summary.done == 1
    assert sorted(p.name for p in outside.iterdir()) == ["private.wav"]  # nothing written out there
    assert (src / "sub" / "real.en.srt").exists()

    followed = scan(str(src), follow_symlinks=True)
    assert [r.rel_path for r in followed.recordings] == ["away.wav", "away/private.wav", "sub/real.wav"]
    monkeypatch.setenv("VOXFLOW_FOLLOW_SYMLINKS", "1")
    plan = plan_run(str(src), load_settings(out=str(tmp_path / "out"), beside_source=True, formats="srt"))
    # away.wav and away/private.wav are one file reached twice: transcribed once, each named.
    assert sorted(r.rel_path for r in [*plan.todo, *plan.twins]) == ["away.wav", "away/private.wav"]
    assert len(plan.todo) == 1


def test_an_empty_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SOURCE is empty"):
        scan("")
    with pytest.raises(ConfigError, match="SOURCE is empty"):
        plan_run("", load_settings(out=str(tmp_path / "out")))
    with pytest.raises(ConfigError, match="SOURCE is empty"):
        scan_documents("")
    for command in ("transcribe", "narrate"):
        proc = cli_run(command, "", "--out", str(tmp_path / "out"), cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "SOURCE is empty: give a folder, file or s3:// URL" in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr


def test_paths_passed_over_are_listed_in_the_manifest(tmp_path: Path) -> None:
    """What the scan never opened reaches the run manifest with the reason."""
    import json

    from voxflow.settings import load_settings
    from voxflow.transcribe import plan_run, run_inline

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    os.mkfifo(src / "pipe.wav")
    (src / "outside").symlink_to(tmp_path)
    summary = run_inline(plan_run(str(src), load_settings(out=str(out))))
    manifest = json.loads(Path(summary.manifest).read_text())
    assert {p["path"]: p["reason"] for p in manifest["passed_over"]} == {
        "pipe.wav": "named pipe (FIFO)",
        "outside": "symlink out of the source",
    }
