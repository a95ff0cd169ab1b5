"""``--translate-to`` through OpenRouter chat: a recording's subtitle cues translated line for
line (voxflow.translation) and written as ``<stem>.<lang>.srt|vtt|txt|json`` with every cue's
start and end kept; one ``translations`` catalog row per language, done or failed.

Invariant, checked before anything is written: the translation has as many cues as the
original and each has the original's times. A language whose answer breaks it (or whose
requests fail for good) gets no sidecars, a failed row and a warning; the others go on.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from voxflow.engines.openrouter.chat import OpenRouterChat
from voxflow.errors import EngineError, LinesMismatch, OutputError, RunAbort
from voxflow.fsnames import printable_name
from voxflow.models import Cue, Recording, Segment, Transcript, language_code
from voxflow.subtitles import SidecarDoc, shape_cues, wrap_lines
from voxflow.transcribe.outputs import ChatOutcome, SidecarWrites, sidecar_targets, write_doc
from voxflow.translation import translate_lines

if TYPE_CHECKING:
    from voxflow.limits import Budget, RequestLimiter
    from voxflow.ownership import OutputLedger
    from voxflow.settings import Settings

TranslationStatus = Literal["done", "failed"]
CueTimes = tuple[tuple[int, int], ...]  # (start_ms, end_ms) of each cue


def chat_translator(settings: Settings, limiter: RequestLimiter) -> OpenRouterChat | None:
    """The run's chat engine for --translate-to (None when no target needs one); its requests
    share the run's request limiter with transcription."""
    if not settings.chat_targets:
        return None
    chat = OpenRouterChat(settings.translation_model, settings)
    chat.use_limiter(limiter)
    return chat


def targets_for(settings: Settings, language: str) -> tuple[str, ...]:
    """The chat targets a recording in ``language`` needs (its own language is skipped)."""
    return tuple(code for code in settings.chat_targets if code != language_code(language))


@dataclass(frozen=True)
class TranslationJob:
    """One recording's transcript and what its translations need (run, engine, budget, ledger)."""

    rec: Recording
    transcript: Transcript
    duration_ms: int
    targets: tuple[str, ...]
    chat: OpenRouterChat
    budget: Budget | None
    ledger: OutputLedger
    settings: Settings
    run_id: str
    writer: str
    extra: dict[str, Any] = field(default_factory=dict)
    original_times: CueTimes | None = None  # the original sidecar's cue times, when read back


def translate_recording(job: TranslationJob) -> ChatOutcome:
    """Every target of ``job`` translated and written (RunAbort — key, credit, budget — stops the run)."""
    if not job.targets:
        return ChatOutcome()
    return asyncio.run(_translate_and_close(job))


async def _translate_and_close(job: TranslationJob) -> ChatOutcome:
    try:
        cues = shape_cues(job.transcript.segments, job.duration_ms)  # what write_sidecars wrote
        if not cues:
            return ChatOutcome()
        if job.original_times is not None and job.original_times != tuple((c.start_ms, c.end_ms) for c in cues):
            why = "the original's subtitles no longer match the catalog's cues (--force transcribes it again)"
            source = language_code(job.transcript.language)
            rows = failed_rows(job.rec, source, job.targets, job.settings, job.run_id, why)
            return ChatOutcome(rows=tuple(rows), warnings=tuple(_warning(job.rec, r) for r in rows))
        answers = await asyncio.gather(*(_one_language(job, cues, t) for t in job.targets), return_exceptions=True)
    finally:
        await job.chat.aclose()
    aborted = next((a for a in answers if isinstance(a, RunAbort)), None)
    for answer in answers:
        if isinstance(answer, BaseException) and not isinstance(answer, RunAbort):
            raise answer
    done = [
        _stopped(job, len(cues), t, a) if isinstance(a, RunAbort) else a
        for a, t in zip(answers, job.targets, strict=True)
    ]
    return ChatOutcome(
        rows=tuple(row for row, _ in done),
        writes=tuple(w for _, w in done if w is not None),
        warnings=tuple(_warning(job.rec, row) for row, _ in done if row["status"] == "failed"),
        cost_usd=sum(row["cost_usd"] for row, _ in done),
        aborted=aborted,
    )


async def _one_language(
    job: TranslationJob, cues: list[Cue], target: str
) -> tuple[dict[str, Any], SidecarWrites | None]:
    """One target: translated, checked, written; or a failed row and nothing written."""
    source = language_code(job.transcript.language)
    row = functools.partial(_row, job.rec, job.settings, job.run_id, target, source, len(cues))
    lines = [" ".join(cue.text.split()) for cue in cues]
    try:
        translated = await translate_lines(job.chat, lines, source, target, job.budget)
        doc = translated_doc(job, cues, translated.lines, source, target)
        settings, ledger = job.settings, job.ledger
        writes = await asyncio.to_thread(
            write_doc, job.rec, doc, ledger, settings, run_id=job.run_id, writer=job.writer
        )
    except RunAbort:
        raise
    except LinesMismatch as exc:
        return row(exc.cost_usd, "failed", str(exc)), None
    except (EngineError, OutputError) as exc:
        return row(0.0, "failed", f"translation to {target}: {exc}"), None
    return row(translated.cost_usd, "done", None, next(iter(writes.written), None), writes.written), writes


def _stopped(job: TranslationJob, n_cues: int, target: str, abort: RunAbort) -> tuple[dict[str, Any], None]:
    """The failed row of a language whose translation a RunAbort stopped."""
    source = language_code(job.transcript.language)
    return _row(
        job.rec, job.settings, job.run_id, target, source, n_cues, 0.0, "failed", f"translation to {target}: {abort}"
    ), None


def translated_doc(
    job: TranslationJob, cues: Sequence[Cue], texts: Sequence[str], source: str, target: str
) -> SidecarDoc:
    """The sidecars' document: the original's cues with the translated text (re-wrapped), one
    segment per cue; LinesMismatch unless every cue pairs with the original's."""
    translated = tuple(replace(cue, text=wrap_lines(text.split())) for cue, text in zip(cues, texts, strict=True))
    _check_cues(cues, translated, target)
    segments = tuple(Segment(c.start_ms, c.end_ms, " ".join(c.text.split()), speaker=c.speaker) for c in translated)
    extra = {
        "source": printable_name(job.rec.rel_path),
        "recording_id": job.rec.recording_id,
        "translated_from": source,
        "transcription_model": job.settings.transcription_model,
    }
    return SidecarDoc(
        text=" ".join(s.text for s in segments),
        language=target,
        model=job.settings.translation_model,
        duration_ms=job.duration_ms,
        segments=segments,
        cues=translated,
        extra={**extra, **job.extra},
    )


def _check_cues(original: Sequence[Cue], translated: Sequence[Cue], target: str) -> None:
    pairs = [(a.start_ms, a.end_ms) for a in original] == [(b.start_ms, b.end_ms) for b in translated]
    if not pairs or any(not cue.text.strip() for cue in translated):
        raise LinesMismatch(f"translation to {target}: its cues do not pair with the original's {len(original)} cues")


def original_cue_times(rec: Recording, language: str, ledger: OutputLedger, settings: Settings) -> CueTimes | None:
    """The cue times of the recording's own SRT or VTT sidecar as voxflow wrote it, read back
    with the ``srt`` / ``webvtt`` libraries (None when there is none to read)."""
    import srt
    import webvtt

    for target in sidecar_targets(rec, language, ledger, settings):
        if target.fmt not in ("srt", "vtt") or target.state != "mine":
            continue
        try:
            text = bytes(target.tree.fs.cat_file(target.tree.path(target.rel))).decode("utf-8")
            if target.fmt == "srt":
                return tuple((_ms(c.start), _ms(c.end)) for c in srt.parse(text))
            return tuple((_vtt_ms(c.start_time), _vtt_ms(c.end_time)) for c in webvtt.from_string(text))
        except (OSError, ValueError, srt.SRTParseError, webvtt.errors.MalformedFileError):
            continue
    return None


def _ms(delta: Any) -> int:
    return round(delta.total_seconds() * 1000)


def _vtt_ms(t: Any) -> int:
    return ((t.hours * 60 + t.minutes) * 60 + t.seconds) * 1000 + t.milliseconds


def _row(
    rec: Recording,
    settings: Settings,
    run_id: str,
    target: str,
    source: str,
    n_cues: int,
    cost_usd: float,
    status: TranslationStatus,
    error: str | None,
    path: str | None = None,
    outputs: Sequence[str] = (),
) -> dict[str, Any]:
    """One ``translations`` row (see voxflow.io.catalog.SCHEMAS)."""
    return {
        "recording_id": rec.recording_id,
        "source_uri": rec.uri,
        "rel_path": rec.rel_path,
        "language": target,
        "translated_from": source,
        "model": settings.translation_model,
        "n_cues": n_cues,
        "cost_usd": cost_usd,
        "status": status,
        "error_message": error,
        "path": path,
        "outputs": list(outputs),
        "run_id": run_id,
        "finished_at": datetime.fromtimestamp(time.time(), tz=UTC),
    }


def failed_rows(
    rec: Recording, source: str, targets: Sequence[str], settings: Settings, run_id: str, why: str
) -> list[dict[str, Any]]:
    """Failed rows for ``targets`` of a recording whose translation could not even start."""
    return [_row(rec, settings, run_id, t, source, 0, 0.0, "failed", f"translation to {t}: {why}") for t in targets]


def _warning(rec: Recording, row: dict[str, Any]) -> str:
    return f"{rec.display_path}: {row['error_message']} — no {row['language']} sidecars written"


def translation_failures(rows: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Failed rows as the manifest's ``errors`` entries."""
    return [
        {"file": r["rel_path"], "kind": "TranslationFailed", "message": f"{r['rel_path']}: {r['error_message']}"}
        for r in rows
        if r["status"] == "failed"
    ]
