"""Every `voxflow` command run through its CLI, the transcribe flow under a real Prefect server."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_bad_inputs
from voxflow.cli import app

runner = CliRunner()


def _flow_run_count() -> int:
    from prefect.client.orchestration import get_client

    async def count() -> int:
        async with get_client() as client:
            return len(await client.read_flow_runs())

    return asyncio.run(count())


def test_transcribe_runs_the_prefect_flow_then_noops_without_it(
    prefect_harness: None, clip_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = runner.invoke(app, ["transcribe", str(clip_dir), "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "embedded offline" in first.output and "local/auto" in first.output
    assert len(list(out.glob("*.en.srt"))) == 3
    runs = _flow_run_count()
    assert runs >= 1
    second = runner.invoke(app, ["transcribe", str(clip_dir), "--out", str(out)])
    assert second.exit_code == 0 and "3 already done" in second.output
    assert _flow_run_count() == runs, "a no-op run must not start a flow"
    report = runner.invoke(app, ["report", "--out", str(out)])
    assert report.exit_code == 0 and "done: 3" in report.output


def test_failed_items_exit_1_and_are_listed(prefect_harness: None, tmp_path: Path) -> None:
    src = tmp_path / "bad"
    make_bad_inputs(src)
    (src / "locked.wav").unlink()  # root reads anything; covered by test_transcribe
    result = runner.invoke(app, ["transcribe", str(src), "--out", str(tmp_path / "out"), "--formats", "srt"])
    assert result.exit_code == 1, result.output
    assert "corrupt.flac" in result.output and "no audio stream" in result.output


def test_missing_source_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["transcribe", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_folder_without_media_says_so(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("hello")
    result = runner.invoke(app, ["transcribe", str(tmp_path / "docs"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0 and "no media files found" in result.output


def test_bad_flag_value_is_a_usage_error(clip_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["transcribe", str(clip_dir), "--formats", "srt,docx"])
    assert result.exit_code == 2 and "--formats (VOXFLOW_FORMATS) must be one or more of" in result.output


def test_doctor_checks_tools_and_never_prints_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-doctor-secret-0123456789")
    monkeypatch.setenv("OPENROUTER_BASE_URL", "http://127.0.0.1:9/api/v1")  # nothing listens: the key check fails
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1, result.output  # tests/test_doctor.py checks a key the emulator accepts
    assert "ffprobe" in result.output and "cannot reach" in result.output
    assert "doctor-secret" not in result.output


def test_report_on_empty_output(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "--out", str(tmp_path)])
    assert result.exit_code == 0 and "no catalog" in result.output


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    for command in ("transcribe", "narrate", "models", "voices", "report", "doctor", "emulator"):
        assert command in result.output
    assert shutil.which("ffmpeg")
