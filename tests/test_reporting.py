"""`voxflow report` and known failures, through the real CLI, checked against DuckDB reading
the same Parquet catalog and run manifests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from tests.conftest import SAMPLES, cli_run, prefect_rest

TZ = "Etc/GMT-14"  # UTC+14 all year: the "local date" of a run is checked against a fixed offset
DAY_S = 86400


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "VOXFLOW_LOCAL_THREADS": "1", "TZ": TZ, "COLUMNS": "60", **env}
    return subprocess.run(
        [sys.executable, "-m", "voxflow.cli", *args], capture_output=True, text=True, env=environ, timeout=600
    )


@pytest.fixture(scope="module")
def two_nights(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run 1 (yesterday, shifted): a good clip and an empty .wav (fails); run 2: a new clip,
    the empty .wav unchanged (a known failure, not retried)."""
    root = tmp_path_factory.mktemp("report")
    src, out = root / "src", root / "out"
    src.mkdir()
    shutil.copy(SAMPLES / "spk1_snt1.wav", src / "one.wav")
    (src / "empty.wav").write_bytes(b"")
    first = cli("transcribe", str(src), "--out", str(out))
    report_after_first = cli("report", "--out", str(out), "--json")
    (manifest,) = (out / "runs").glob("*.json")
    data = json.loads(manifest.read_text())
    data["started_at"] -= DAY_S  # last night's run, as far as the report can tell
    data["finished_at"] -= DAY_S
    manifest.write_text(json.dumps(data))
    shutil.copy(SAMPLES / "spk1_snt3.wav", src / "two.wav")
    second = cli("transcribe", str(src), "--out", str(out))
    return {"out": out, "first": first, "second": second, "report_after_first": report_after_first}


def catalog_oracle(out: Path, run_ids: list[str] | None = None) -> dict:
    where = f"WHERE run_id IN ({', '.join(repr(r) for r in run_ids)})" if run_ids is not None else ""
    rows = f"(SELECT * FROM read_parquet('{out}/catalog/transcripts/*.parquet', union_by_name=true) {where})"
    latest = (
        f"(SELECT * FROM {rows} QUALIFY row_number() OVER "
        "(PARTITION BY coalesce(nullif(recording_id, ''), source_uri) ORDER BY finished_at DESC) = 1)"
    )
    n, done, failed, hours = duckdb.sql(
        f"SELECT count(*), count(*) FILTER (status = 'done'), count(*) FILTER (status = 'failed'), "
        f"coalesce(sum(duration_s) FILTER (status = 'done'), 0) / 3600 FROM {latest}"
    ).fetchall()[0]
    (cost,) = duckdb.sql(f"SELECT coalesce(sum(cost_usd), 0) FROM {rows}").fetchall()[0]
    failures = duckdb.sql(f"SELECT rel_path, error_kind FROM {latest} WHERE status = 'failed' ORDER BY 1").fetchall()
    return {"recordings": n, "done": done, "failed": failed, "hours": hours, "cost": cost, "failures": failures}


def nights_oracle(out: Path) -> list[tuple]:
    return duckdb.sql(
        "SELECT strftime(make_timestamp(CAST(started_at * 1e6 AS BIGINT)) + INTERVAL 14 HOUR, '%Y-%m-%d') AS night, "
        "count(*), sum(counts.done), sum(counts.failed), sum(audio_s) / 3600, sum(cost_usd), "
        "sum(finished_at - started_at) "
        f"FROM read_json('{out}/runs/*.json', union_by_name=true) GROUP BY night ORDER BY night"
    ).fetchall()


def test_runs_exit_codes_and_known_failure_line(two_nights: dict) -> None:
    """Run 1 fails (empty .wav); run 2 lists it as a known failure and exits 0."""
    assert two_nights["first"].returncode == 1, two_nights["first"].stderr
    second = two_nights["second"]
    assert second.returncode == 0, second.stderr
    assert "1 known failures (unchanged since run" in second.stderr
    assert "--retry-failed to try again" in second.stderr


def test_report_json_matches_duckdb(two_nights: dict) -> None:
    out = two_nights["out"]
    result = cli("report", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr  # the last run had no failures (only a known one)
    data = json.loads(result.stdout)
    oracle = catalog_oracle(out)
    cat = data["catalog"]
    assert (cat["recordings"], cat["done"], cat["failed"]) == (oracle["recordings"], oracle["done"], oracle["failed"])
    assert (cat["recordings"], cat["done"], cat["failed"]) == (3, 2, 1)
    assert cat["audio_hours"] == pytest.approx(oracle["hours"])
    assert cat["cost_usd"] == pytest.approx(oracle["cost"])
    failures = sorted((f["file"], f["kind"]) for f in cat["failures"])
    assert failures == oracle["failures"] == [("empty.wav", "AudioError")]
    keys = ("night", "runs", "done", "failed", "audio_hours", "cost_usd", "wall_s")
    nights = [tuple(n[k] for k in keys) for n in data["nights"]]
    expected = nights_oracle(out)
    assert len(nights) == len(expected) == 2
    for got, want in zip(nights, expected, strict=True):
        assert got[:4] == want[:4]
        assert got[4:] == pytest.approx(want[4:])
    assert [k["file"] for k in data["last_run"]["known_failures"]] == ["empty.wav"]


def test_report_exit_1_when_last_run_failed(two_nights: dict) -> None:
    first = two_nights["report_after_first"]
    assert first.returncode == 1, first.stderr
    assert json.loads(first.stdout)["last_run"]["failed"] == 1


def test_report_since_keeps_later_runs_only(two_nights: dict) -> None:
    out = two_nights["out"]
    (last_night, _), (today, _) = [(n[0], n[1]) for n in nights_oracle(out)]
    result = cli("report", "--out", str(out), "--json", "--since", today)
    data = json.loads(result.stdout)
    assert [n["night"] for n in data["nights"]] == [today]
    later = duckdb.sql(
        f"SELECT run_id FROM read_json('{out}/runs/*.json', union_by_name=true) "
        f"WHERE strftime(make_timestamp(CAST(started_at * 1e6 AS BIGINT)) + INTERVAL 14 HOUR, '%Y-%m-%d') >= '{today}'"
    ).fetchall()
    oracle = catalog_oracle(out, [r for (r,) in later])
    assert (data["catalog"]["recordings"], data["catalog"]["done"]) == (oracle["recordings"], oracle["done"]) == (1, 1)
    assert last_night < today


def test_report_text_lists_known_failures_and_nights(two_nights: dict) -> None:
    result = cli("report", "--out", str(two_nights["out"]))
    assert result.returncode == 0
    assert "known   empty.wav  since run" in result.stdout
    assert len([line for line in result.stdout.splitlines() if line[:4].isdigit()]) == 2  # one line per night


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--since", "2026-13-01"], "--since"), (["--since", "yesterday"], "--since"), ([], "--out")],
)
def test_report_bad_flags_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "out" if not args else tmp_path
    result = cli("report", "--out", str(out), *args)
    assert result.returncode == 2
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_refused_file_is_a_known_failure_until_it_changes(tmp_path: Path) -> None:
    """A file refused before hashing (not audio): run 2 exits 0 and names it; --retry-failed
    (and VOXFLOW_RETRY_FAILED) exit 1; a changed file is tried again."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    bad = src / "notes.wav"
    bad.write_text("only text pretending to be audio\n" * 10)
    os.utime(bad, (1_700_000_000, 1_700_000_000))
    assert cli("transcribe", str(src), "--out", str(out)).returncode == 1
    again = cli("transcribe", str(src), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "1 known failures (unchanged since run" in again.stderr
    assert cli("transcribe", str(src), "--out", str(out), "--retry-failed").returncode == 1
    assert cli("transcribe", str(src), "--out", str(out), VOXFLOW_RETRY_FAILED="1").returncode == 1
    assert cli("transcribe", str(src), "--out", str(out)).returncode == 0
    bad.write_text("still text, but changed\n" * 10)
    assert cli("transcribe", str(src), "--out", str(out)).returncode == 1
    report = json.loads(cli("report", "--out", str(out), "--json").stdout)
    assert report["last_run"]["failed"] == 1


def test_transient_kinds_are_not_permanent() -> None:
    """Permanence is a property of the error class (RateLimited retries, AudioError does not)."""
    from voxflow import errors

    assert errors.AudioError.permanent and errors.RequestRejected.permanent and errors.SourceError.permanent
    assert not errors.RateLimited.permanent and not errors.AuthError.permanent and not errors.OutputError.permanent
    assert errors.kind_is_permanent("BadResponse") and not errors.kind_is_permanent("EngineTimeout")
    assert not errors.kind_is_permanent(None) and not errors.kind_is_permanent("NoSuchKind")


def test_unreadable_file_is_known_until_its_permissions_change(tmp_path: Path) -> None:
    """Permission denied (root's override dropped): run 2 exits 0 with it as a known failure;
    once it is made readable (a chmod: mtime unchanged, ctime newer) it is transcribed."""
    from tests.conftest import unprivileged

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    locked = src / "locked.wav"
    shutil.copy(SAMPLES / "spk1_snt3.wav", locked)
    locked.chmod(0)
    environ = {**os.environ, "VOXFLOW_LOCAL_THREADS": "1"}

    def run() -> subprocess.CompletedProcess[str]:
        cmd = unprivileged([sys.executable, "-m", "voxflow.cli", "transcribe", str(src), "--out", str(out)])
        return subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=600)

    first = run()
    assert first.returncode == 1 and "locked.wav" in first.stderr
    second = run()
    assert second.returncode == 0 and "1 known failures" in second.stderr, second.stderr
    locked.chmod(0o644)
    third = run()
    assert third.returncode == 0 and "1 known failures" not in third.stderr, third.stderr
    assert (out / "locked.en.srt").exists()


def test_a_cli_runs_manifest_starts_before_its_prefect_flow_run(
    samples: Path, tmp_path: Path, prefect_api: str
) -> None:
    """The manifest's start (and so `report`'s wall time) is the command's, start-up included,
    not the moment the flow had started; the oracle is the Prefect server's own flow-run start."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(samples / "spk1_snt3.wav", src / "clip.wav")
    done = cli_run("transcribe", str(src), "--out", str(out), "--model", "local/tiny.en", prefect_api=prefect_api)
    assert done.returncode == 0, done.stderr
    manifest = json.loads(next((out / "runs").glob("*.json")).read_text())
    flow_runs = prefect_rest("POST", f"{prefect_api}/flow_runs/filter", json={})
    ours = next(r for r in flow_runs if r["parameters"].get("out") == str(out))
    flow_started = datetime.fromisoformat(ours["start_time"]).timestamp()
    assert manifest["started_at"] < flow_started <= manifest["finished_at"]
