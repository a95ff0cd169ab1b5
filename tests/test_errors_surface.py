"""One error surface: every unusable setting, output or bucket ends the real CLI (run as a
subprocess) with ONE line on stderr that names the flag or path, the documented exit code,
and no traceback unless ``--debug``. Refusals happen before any work is done."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES, unprivileged
from tests.s3server import free_port
from voxflow.testing.emulator import start_emulator_in_thread

KEY = "sk-or-v1-errors-surface-0123456789"


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without the host's AWS settings, one engine thread, plus ``env``."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        "VOXFLOW_LOCAL_THREADS": "1",
        **(env or {}),
    }


def voxflow(*args: str, env: dict[str, str] | None = None, wrap=None) -> subprocess.CompletedProcess[str]:
    """``python -m voxflow.cli ARGS`` in a fresh process, as a user runs it."""
    cmd = [sys.executable, "-m", "voxflow.cli", *args]
    return subprocess.run(
        wrap(cmd) if wrap else cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=cli_env(env)
    )


def error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line that explains the failure; no traceback, the documented exit code."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "─────" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("error:", "aborted:"))]
    assert len(lines) == 1, proc.stderr
    assert lines[0] == proc.stderr.strip().splitlines()[-1], proc.stderr
    return lines[0]


def refusal(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """A refusal before any work: stderr is exactly one line."""
    line = error_line(proc, code)
    assert proc.stderr.strip() == line, proc.stderr
    return line


@pytest.fixture()
def one_clip(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLES / "jfk.flac", folder / "jfk.flac")
    return folder


# ─── unusable --out ──────────────────────────────────────────────────────────────────────


def test_out_is_a_file(one_clip: Path, tmp_path: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("keep me")
    line = refusal(voxflow("transcribe", str(one_clip), "--out", str(target)))
    assert "--out" in line and str(target) in line and "not a folder" in line
    assert target.read_text() == "keep me"


def test_out_read_only_folder(one_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o555)
    line = refusal(voxflow("transcribe", str(one_clip), "--out", str(out / "sub"), wrap=unprivileged))
    assert "--out" in line and str(out / "sub") in line and "ermission denied" in line
    assert list(out.iterdir()) == []


@pytest.fixture()
def mount_point(tmp_path: Path) -> Iterator[Path]:
    """An empty folder to mount a tmpfs on (root only), unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    point = tmp_path / "mnt"
    point.mkdir()
    yield point
    subprocess.run(["umount", str(point)], check=False)


def mount_tmpfs(point: Path, options: str) -> None:
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")


def test_out_on_read_only_file_system(one_clip: Path, mount_point: Path) -> None:
    mount_tmpfs(mount_point, "size=1m,ro")
    line = refusal(voxflow("transcribe", str(one_clip), "--out", str(mount_point / "out")))
    assert "--out" in line and "Read-only file system" in line


def test_disk_full_says_which_file_could_not_be_written(tmp_path: Path, mount_point: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for name in ("jfk.flac", "beckett.wav"):
        shutil.copy(SAMPLES / name, src / name)
    mount_tmpfs(mount_point, "size=48k")
    proc = voxflow("transcribe", str(src), "--out", str(mount_point))
    # The run stops at the first file it cannot write (every other would fail the same way):
    # its summary, then one line saying where and what to do; no file blamed for the disk.
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "cannot decode" not in proc.stderr, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith(("error:", "aborted:"))]
    assert "No space left on device" in line and str(mount_point) in line and "free some space" in line


# ─── buckets ─────────────────────────────────────────────────────────────────────────────


def no_aws(**extra: str) -> dict[str, str]:
    """AWS settings (none of the host's) aimed at a closed port on 127.0.0.1."""
    return {
        **extra,
        "AWS_ENDPOINT_URL": extra.get("AWS_ENDPOINT_URL") or f"http://127.0.0.1:{free_port()}",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "2",
    }


def test_bucket_without_credentials(tmp_path: Path) -> None:
    proc = voxflow("transcribe", "s3://media/talks", "--out", str(tmp_path / "out"), env=no_aws())
    line = error_line(proc, 2)
    assert "credentials" in line and "AWS_ACCESS_KEY_ID" in line


def test_bucket_behind_an_unreachable_endpoint(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = no_aws(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_DEFAULT_REGION="us-east-1")
    proc = voxflow("transcribe", "s3://media/talks", "--out", str(tmp_path / "out"), env=env)
    line = error_line(proc, 2)
    assert url in line and "AWS_ENDPOINT_URL" in line


# ─── settings ────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("flags", "env", "words"),
    [
        (["--formats", "foo"], {}, ["--formats (VOXFLOW_FORMATS)", "srt", "'foo'"]),
        (["--concurrency", "0"], {}, ["--concurrency (VOXFLOW_CONCURRENCY) must be at least 1, got 0"]),
        ([], {"VOXFLOW_CONCURRENCY": "0"}, ["--concurrency (VOXFLOW_CONCURRENCY) must be at least 1"]),
        (["--shard", "3/2"], {}, ["--shard (VOXFLOW_SHARD)", "'3/2'"]),
        (["--language", "xx"], {}, ["--language (VOXFLOW_LANGUAGE)", "ISO-639-1", "'xx'"]),
        (["--language", "english"], {}, ["--language (VOXFLOW_LANGUAGE)", "did you mean en"]),
        (["--translate-to", "fr,xx"], {}, ["--translate-to (VOXFLOW_TRANSLATE_TO) 'xx':", "ISO-639-1"]),
        (["--translate-to", "de,french"], {}, ["--translate-to (VOXFLOW_TRANSLATE_TO) 'french':", "did you mean fr"]),
    ],
)
def test_bad_setting_is_one_line_naming_flag_and_variable(
    one_clip: Path, tmp_path: Path, flags: list[str], env: dict[str, str], words: list[str]
) -> None:
    out = tmp_path / "out"
    line = refusal(voxflow("transcribe", str(one_clip), "--out", str(out), *flags, env=env))
    for word in words:
        assert word in line
    assert "pydantic" not in line
    assert not out.exists(), "a refusal does no work"


def test_language_auto_and_codes_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    for language in ("auto", "de", "EN"):
        args = ("transcribe", str(tmp_path / "docs"), "--out", str(tmp_path / "o"), "--language", language)
        proc = voxflow(*args, "--model", "local/base")
        assert proc.returncode == 0 and "no media files found" in proc.stderr, proc.stderr


def test_an_empty_variable_is_as_if_unset(tmp_path: Path) -> None:
    """`VOXFLOW_CONCURRENCY= voxflow …` (a shell's way to clear a setting) means the default."""
    (tmp_path / "docs").mkdir()
    empty = {f"VOXFLOW_{name}": "" for name in ("LOCAL_PROCESSES", "CONCURRENCY", "LANGUAGE", "FORMATS", "MODEL")}
    proc = voxflow("transcribe", str(tmp_path / "docs"), "--out", str(tmp_path / "o"), env=empty)
    assert proc.returncode == 0 and "no media files found" in proc.stderr, proc.stderr


def test_list_variables_are_comma_separated_as_the_readme_shows(one_clip: Path, tmp_path: Path) -> None:
    """`VOXFLOW_FORMATS=srt,vtt` once ended in "aborted: unexpected SettingsError" (exit 3)."""
    out = tmp_path / "out"
    proc = voxflow(
        "transcribe", str(one_clip), "--out", str(out), env={"VOXFLOW_FORMATS": "srt,vtt", "VOXFLOW_KEYTERMS": "a,b"}
    )
    assert proc.returncode == 0, proc.stderr
    sidecars = {p.suffix for p in out.rglob("jfk*") if p.is_file()}
    assert sidecars == {".srt", ".vtt"}, sidecars


def test_english_only_model_refuses_another_language(one_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    line = refusal(voxflow("transcribe", str(one_clip), "--out", str(out), "-m", "local/tiny.en", "--language", "de"))
    assert "--language" in line and "local/tiny.en" in line and "English" in line
    assert not out.exists()


def test_diarize_on_the_offline_engine_is_refused(one_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    line = refusal(voxflow("transcribe", str(one_clip), "--out", str(out), "--diarize"))
    assert "--diarize" in line and "local/auto" in line
    assert not out.exists()


@pytest.fixture()
def emulator() -> Iterator[str]:
    handle = start_emulator_in_thread(keys=(KEY,), fast_text=True)
    yield handle.url
    handle.stop()


def test_diarize_with_a_model_that_cannot_is_refused_before_the_batch(
    one_clip: Path, tmp_path: Path, emulator: str
) -> None:
    env = {"OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": emulator}
    out = tmp_path / "out"
    args = ("transcribe", str(one_clip), "--out", str(out), "--diarize", "--formats", "srt")
    line = error_line(voxflow(*args, "-m", "openai/whisper-large-v3", env=env), 2)
    assert "--diarize" in line and "openai/whisper-large-v3" in line and "elevenlabs/scribe-v1" in line
    assert not list(out.glob("catalog/transcripts/*.parquet")), "no catalog rows for a refused run"


# ─── debug, help, version ────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(tmp_path: Path, one_clip: Path, how: str) -> None:
    target = tmp_path / "a-file"
    target.write_text("x")
    args = ["--debug"] if how == "flag" else []
    env = {"VOXFLOW_DEBUG": "1"} if how == "env" else {}
    proc = voxflow(*args, "transcribe", str(one_clip), "--out", str(target), env=env)
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "not a folder" in proc.stderr


def test_short_help_version_and_clean_flags() -> None:
    assert voxflow("-h").stdout == voxflow("--help").stdout != ""
    proc = voxflow("--version")
    assert proc.returncode == 0 and version("voxflow") in proc.stdout
    help_text = " ".join(voxflow("transcribe", "-h").stdout.split())
    assert "<bool>" not in help_text and "--force" in help_text
    assert "[default: 8]" in help_text and "[default: srt,vtt,txt,json]" in help_text


# ─── --beside-source on folders that cannot take sidecars ────────────────────────────────


@pytest.mark.parametrize("given", ["folder", "file"])
def test_beside_source_in_a_read_only_folder_is_refused_before_any_work(
    one_clip: Path, tmp_path: Path, given: str
) -> None:
    one_clip.chmod(0o555)
    out = tmp_path / "out"
    source = one_clip if given == "folder" else one_clip / "jfk.flac"
    line = refusal(voxflow("transcribe", str(source), "--beside-source", "--out", str(out), wrap=unprivileged))
    assert "--beside-source" in line and f"{one_clip} " in line and "read-only" in line and "--out" in line
    assert [p.name for p in one_clip.iterdir()] == ["jfk.flac"]
    assert not out.exists(), "a refusal does no work"


def test_beside_source_read_only_subfolder_fails_that_recording_and_the_batch_carries_on(tmp_path: Path) -> None:
    import srt

    src, out = tmp_path / "in", tmp_path / "out"
    (src / "locked").mkdir(parents=True)
    shutil.copy(SAMPLES / "jfk.flac", src / "jfk.flac")
    shutil.copy(SAMPLES / "spk1_snt1.wav", src / "locked" / "spk1_snt1.wav")
    (src / "locked").chmod(0o555)
    args = ("transcribe", str(src), "--beside-source", "--out", str(out), "--formats", "srt", "-m", "local/tiny.en")
    proc = voxflow(*args, wrap=unprivileged)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "OSError" not in proc.stderr and "Errno" not in proc.stderr
    said = [ln for ln in proc.stderr.splitlines() if "locked/spk1_snt1.wav" in ln]
    assert said and all("Permission denied" in ln for ln in said), proc.stderr
    (sidecar,) = src.glob("jfk*.srt")
    assert list(srt.parse(sidecar.read_text())), "the writable folder's recording was done"
    assert [p.name for p in (src / "locked").iterdir()] == ["spk1_snt1.wav"]


# ─── refusals: first, and on one line at any width ───────────────────────────────────────


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["transcribe", ""], ["SOURCE is empty"]),
        (["narrate", ""], ["SOURCE is empty"]),
        (["narrate", "{docs}", "--speed", "0"], ["--speed 0", "0.25 to 4"]),
        (["narrate", "{docs}", "--lexicon", "/missing.toml"], ["--lexicon", "/missing.toml"]),
        (["transcribe", "{docs}", "--language", "english"], ["--language (VOXFLOW_LANGUAGE)", "did you mean en"]),
    ],
)
def test_refusals_come_before_the_engine_line_on_one_line_at_any_width(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "book.txt").write_text("A short book. It has two sentences.\n")
    argv = [a.format(docs=docs) for a in args]
    proc = voxflow(*argv, "--out", str(tmp_path / "out"), env={"COLUMNS": "40"})
    line = refusal(proc)
    assert proc.stdout == "", "a refusal prints nothing else"
    for word in words:
        assert word in line


# ─── click's own usage errors ────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["transcribe", "x", "--concurrency", "abc"], ["--concurrency", "abc", "voxflow.cli transcribe -h"]),
        (["transcribe", "x", "--bogus"], ["--bogus", "voxflow.cli transcribe -h"]),
        (["transcribe"], ["SOURCE", "voxflow.cli transcribe -h"]),
        (["transcribe", "x", "--out"], ["--out", "voxflow.cli transcribe -h"]),
        (["report", "extra"], ["extra", "voxflow.cli report -h"]),
        (["bogus"], ["bogus", "voxflow.cli -h"]),
    ],
)
def test_usage_errors_are_one_line_naming_the_flag_and_what_to_do(args: list[str], words: list[str]) -> None:
    proc = voxflow(*args, env={"COLUMNS": "40"})
    line = refusal(proc)
    assert proc.stdout == "" and "Usage:" not in proc.stderr
    for word in words:
        assert word in line


def test_usage_names_arguments_in_capitals() -> None:
    for command, argument in [("transcribe", "SOURCE"), ("narrate", "SOURCE"), ("search", "QUERY"), ("serve", "OUT")]:
        usage = voxflow(command, "-h").stdout.splitlines()[0]
        assert usage.endswith(f"{command} [OPTIONS] {argument}"), usage


# ─── a reader that goes away ─────────────────────────────────────────────────────────────


def popen_into_closed_pipe(args: list[str], stderr: int | None = None, after_line: bool = True) -> int:
    """Run the CLI with stdout (and stderr unless given) into a pipe whose reader leaves after
    the first line (``| head -1``), or at once; the exit code."""
    reader, writer = os.pipe()
    cmd = [sys.executable, "-m", "voxflow.cli", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=cli_env(), stdout=writer, stderr=writer if stderr is None else stderr)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        if after_line:
            pipe.readline()
    return proc.wait(timeout=600)


def test_a_closed_pipe_ends_quietly_and_the_run_still_does_its_work(one_clip: Path, tmp_path: Path) -> None:
    import json

    import srt

    out = tmp_path / "out"
    args = ["transcribe", str(one_clip), "--out", str(out), "--formats", "srt", "-m", "local/tiny.en"]
    assert popen_into_closed_pipe(args) == 0  # `voxflow transcribe … 2>&1 | head -1`
    (manifest,) = (out / "runs").glob("*.json")
    assert json.loads(manifest.read_text())["counts"]["done"] == 1
    (sidecar,) = out.glob("jfk*.srt")
    assert list(srt.parse(sidecar.read_text()))
    for report in (["report", "--out", str(out)], ["report", "--out", str(out), "--json"]):
        with (tmp_path / "stderr").open("w+") as err:
            assert popen_into_closed_pipe(report, stderr=err.fileno(), after_line=False) == 0  # `| true`
            err.seek(0)
            said = err.read()
        assert said == "", said


# ─── names that are not UTF-8 ────────────────────────────────────────────────────────────


def test_non_utf8_names_print_as_the_catalog_stores_them(tmp_path: Path) -> None:
    import duckdb

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    Path(os.fsdecode(os.fsencode(src) + b"/broken\xff.wav")).write_bytes(b"not audio at all")
    cmd = [sys.executable, "-m", "voxflow.cli", "transcribe", str(src), "--out", str(out), "-m", "local/tiny.en"]
    proc = subprocess.run(cmd, cwd=ROOT, env=cli_env(), capture_output=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    said = proc.stdout.decode() + proc.stderr.decode()  # strict UTF-8: no raw surrogate bytes
    ((shown,),) = duckdb.sql(f"select rel_path from read_parquet('{out}/catalog/transcripts/*.parquet')").fetchall()
    assert shown == "broken\\xff.wav"
    assert shown in said and "\\udc" not in said, said
    missing = os.fsdecode(os.fsencode(src) + b"/gone\xff")
    proc = subprocess.run([*cmd[:4], missing, *cmd[5:]], cwd=ROOT, env=cli_env(), capture_output=True, timeout=600)
    assert proc.returncode == 2 and b"gone\\xff" in proc.stderr and b"\\udc" not in proc.stderr, proc.stderr
