"""The transcription flow writes its manifest whatever a task raises (regression for 80036fe:
an exception escaping a task escaped ``run_plan`` and the manifest was lost)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from tests.test_openrouter_flow import tones
from voxflow.engines.openrouter import OpenRouterTranscriber
from voxflow.io.catalog import CatalogWriter
from voxflow.testing.emulator import start_emulator_in_thread

KEY = "sk-or-v1-test-0123456789abcdef-MANIFEST"
VICTIM = "rec001.flac"


@pytest.fixture()
def emulator(monkeypatch: pytest.MonkeyPatch):
    handle = start_emulator_in_thread(keys=(KEY,), fast_text=True)
    monkeypatch.setenv("OPENROUTER_API_KEY", KEY)
    monkeypatch.setenv("OPENROUTER_BASE_URL", handle.url)
    yield handle
    handle.stop()


def _engine_raises_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    async def transcribe(self, chunk, options):
        raise ZeroDivisionError("a bug in the engine")  # not a VoxflowError

    monkeypatch.setattr(OpenRouterTranscriber, "transcribe", transcribe)


def _task_raises_an_infrastructure_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.transcribe as task_module

    real = task_module.transcribe_recording

    def transcribe_recording(rec, ctx):
        if rec.rel_path.endswith(VICTIM):
            raise OSError(28, "No space left on device")  # e.g. the scratch disk filled up
        return real(rec, ctx)

    monkeypatch.setattr(task_module, "transcribe_recording", transcribe_recording)


def _catalog_write_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    real = CatalogWriter.add_result

    def add_result(self, result, on_flushed=None):
        if result.recording.rel_path.endswith(VICTIM):
            raise OSError(5, "Input/output error")  # the row cannot even be buffered/written
        return real(self, result, on_flushed)

    monkeypatch.setattr(CatalogWriter, "add_result", add_result)


@pytest.mark.parametrize(
    ("fault", "failed", "kind"),
    [
        (_task_raises_an_infrastructure_fault, [VICTIM], "OSError"),
        (_catalog_write_fails, [VICTIM], "OSError"),
        (_engine_raises_a_bug, ["rec000.flac", VICTIM, "rec002.flac"], "ZeroDivisionError"),
    ],
    ids=["task-raises-OSError", "catalog-write-raises", "engine-raises-a-bug"],
)
def test_a_task_that_raises_still_leaves_a_manifest(
    prefect_harness: None, emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fault, failed, kind
) -> None:
    from flows.transcribe import transcribe_flow

    fault(monkeypatch)
    src, out = tmp_path / "in", tmp_path / "out"
    tones(src, 3, 3)
    summary = transcribe_flow(source=str(src), out=str(out), options={"max_chunk_s": 4})
    manifests = list((out / "runs").glob("*.json"))
    assert len(manifests) == 1, "the run manifest was written"
    manifest = json.loads(manifests[0].read_text())
    assert manifest["counts"]["done"] == 3 - len(failed) and manifest["counts"]["failed"] == len(failed)
    assert sorted(e["file"] for e in manifest["errors"]) == failed
    assert {e["kind"] for e in manifest["errors"]} == {kind}
    assert summary["exit_code"] == 1
    table = str(out / "catalog" / "transcripts" / "*.parquet")
    statuses = dict(duckdb.sql(f"select rel_path, status from read_parquet('{table}')").fetchall())
    for name in ("rec000.flac", VICTIM, "rec002.flac"):
        if name not in failed:
            assert statuses[name] == "done"
        elif fault is not _catalog_write_fails:  # the failure reached the catalog too
            assert statuses[name] == "failed"
