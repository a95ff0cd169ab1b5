"""``--minutes`` through OpenRouter chat: a recording's meeting minutes (voxflow.minutes) written
as ``<stem>.minutes.md`` beside its other sidecars, and one ``minutes`` catalog row, done or failed.

Every cited time was checked against the transcript's segments before anything is written; a
recording whose minutes cannot be made (invalid answers twice, requests failing for good) gets
no file, a failed row and a warning; the batch goes on. Key, credit and budget stop the run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from voxflow.engines.openrouter.chat import OpenRouterChat
from voxflow.errors import EngineError, OutputError, RunAbort
from voxflow.fsnames import printable_name
from voxflow.minutes import Minutes, Tally, as_json_text, make_minutes, render_markdown
from voxflow.models import Recording, Transcript
from voxflow.transcribe.outputs import ChatOutcome, SidecarTarget, extra_target, write_claimed

if TYPE_CHECKING:
    from voxflow.limits import Budget, RequestLimiter
    from voxflow.ownership import OutputLedger
    from voxflow.settings import Settings

MinutesStatus = Literal["done", "failed"]
SUFFIX = "minutes.md"


def minutes_writer(settings: Settings, limiter: RequestLimiter) -> OpenRouterChat | None:
    """The run's chat engine for --minutes (None without the flag); its requests share the
    run's request limiter with transcription and translation."""
    if not settings.minutes:
        return None
    chat = OpenRouterChat(settings.minutes_model, settings)
    chat.use_limiter(limiter)
    return chat


def minutes_target(
    rec: Recording, ledger: OutputLedger, settings: Settings, existing: set[str] | None = None
) -> SidecarTarget:
    return extra_target(rec, SUFFIX, ledger, settings, existing)


@dataclass(frozen=True)
class MinutesJob:
    """One recording's transcript and what its minutes need (engine, budget, ledger, run)."""

    rec: Recording
    transcript: Transcript
    duration_ms: int
    chat: OpenRouterChat
    budget: Budget | None
    ledger: OutputLedger
    settings: Settings
    run_id: str
    writer: str


def minutes_for(job: MinutesJob) -> ChatOutcome:
    """The recording's minutes made, checked and written (never raises but for bugs)."""
    if not any(s.text.strip() for s in job.transcript.segments):
        return ChatOutcome()
    return asyncio.run(_make_and_close(job))


async def _make_and_close(job: MinutesJob) -> ChatOutcome:
    tally = Tally()
    try:
        minutes = await make_minutes(job.chat, job.transcript.segments, job.duration_ms, tally, job.budget)
        target = minutes_target(job.rec, job.ledger, job.settings)
        text = render_markdown(minutes, printable_name(job.rec.rel_path), job.settings.minutes_model)
        writes = await asyncio.to_thread(
            write_claimed, job.rec, target, text, job.ledger, job.settings, run_id=job.run_id, writer=job.writer
        )
    except RunAbort as exc:
        return _failed(job, tally, f"minutes: {exc}", aborted=exc)
    except (EngineError, OutputError) as exc:
        return _failed(job, tally, f"minutes: {exc}")
    finally:
        await job.chat.aclose()
    notes = tuple(f"{job.rec.display_path}: minutes {w}" for w in tally.warnings) + tuple(writes.left_alone)
    path = next(iter(writes.written), None)
    row = minutes_row(job.rec, job.settings, job.run_id, "done", tally, minutes, path=path, warnings=notes)
    return ChatOutcome((row,), (writes,), notes, tally.cost_usd)


def _failed(job: MinutesJob, tally: Tally, why: str, aborted: RunAbort | None = None) -> ChatOutcome:
    warning = f"{job.rec.display_path}: {why} — no minutes written"
    row = minutes_row(job.rec, job.settings, job.run_id, "failed", tally, error=why, warnings=(warning,))
    return ChatOutcome((row,), (), (warning,), tally.cost_usd, aborted)


def minutes_row(
    rec: Recording,
    settings: Settings,
    run_id: str,
    status: MinutesStatus,
    tally: Tally,
    minutes: Minutes | None = None,
    *,
    path: str | None = None,
    error: str | None = None,
    warnings: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One ``minutes`` row (see voxflow.io.catalog.SCHEMAS)."""
    return {
        "recording_id": rec.recording_id,
        "source_uri": rec.uri,
        "rel_path": rec.rel_path,
        "model": settings.minutes_model,
        "summary": minutes.summary if minutes else None,
        "decisions": as_json_text(minutes.decisions) if minutes else None,
        "action_items": as_json_text(minutes.action_items) if minutes else None,
        "n_requests": tally.requests,
        "cost_usd": tally.cost_usd,
        "status": status,
        "error_message": error,
        "warnings": list(warnings),
        "path": path,
        "run_id": run_id,
        "finished_at": datetime.fromtimestamp(time.time(), tz=UTC),
    }


def failed_minutes_row(rec: Recording, settings: Settings, run_id: str, why: str) -> dict[str, Any]:
    """The failed row of a recording whose minutes could not even start."""
    return minutes_row(rec, settings, run_id, "failed", Tally(), error=f"minutes: {why}")


def minutes_failures(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Failed rows as the manifest's ``errors`` entries."""
    return [
        {"file": r["rel_path"], "kind": "MinutesFailed", "message": f"{r['rel_path']}: {r['error_message']}"}
        for r in rows
        if r["status"] == "failed"
    ]
