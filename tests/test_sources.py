"""Scanning and writing through fsspec: order, hidden files, sniffing, hash cache, atomicity."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from voxflow.errors import SourceError
from voxflow.sources import HashCache, OutputTree, content_hash, scan


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
