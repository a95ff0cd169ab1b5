"""One recording's task, wherever it runs: its inputs are serialisable (the recording and the
run's RunSpec), the engine and limits are this process's (built on first use, voxflow.runs),
and it hands back a RecordingOutcome the planning process writes to the catalog."""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from voxflow import interrupts, media, progress, scratch
from voxflow.cluster import request_limiter, where_am_i
from voxflow.engines.base import TranscribeOptions, Transcriber, get_transcriber, is_local
from voxflow.engines.openrouter.chat import OpenRouterChat
from voxflow.errors import (
    NotStarted,
    RunAbort,
)
from voxflow.io.catalog import CatalogIndex
from voxflow.io.outputs import OutputTree
from voxflow.io.storage import local_copy
from voxflow.limits import Budget, RequestLimiter
from voxflow.models import (
    PreparedAudio,
    Quality,
    Recording,
    RecordingResult,
    Transcript,
    language_code,
)
from voxflow.ownership import OutputLedger
from voxflow.runs import PerProcess
from voxflow.settings import Settings
from voxflow.transcribe.chunks import (
    ChunkStats,
    all_silence,
    clamped,
    gated,
    stitch,
    transcribe_prepared,
)
from voxflow.transcribe.minutes import MinutesJob, minutes_for, minutes_writer
from voxflow.transcribe.outputs import ChatOutcome, SidecarWrites, write_sidecars
from voxflow.transcribe.plan import failed_result, transcribe_options, writer_name
from voxflow.transcribe.translations import (
    TranslationJob,
    chat_translator,
    targets_for,
    translate_recording,
)

MIN_LANGUAGE_S = 1.0  # less speech than this in a language does not make a recording switch


@dataclass(frozen=True)
class RunSpec:
    """What every task of a run gets besides its recording, serialisable (no secrets, nothing
    open): a worker process on another machine builds its own engine and limits from it."""

    run_id: str
    settings: Settings
    options_hash: str


class OfRun:
    """What a holder of a run's spec can say about the run."""

    spec: RunSpec

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def settings(self) -> Settings:
        return self.spec.settings

    @property
    def options_hash(self) -> str:
        return self.spec.options_hash


@dataclass
class RunResources(OfRun):
    """What the recordings of one run share within one process (engine, limits, output
    ledger): built by the first task a process runs for the run (:func:`resources_for`)."""

    spec: RunSpec
    out: OutputTree
    options: TranscribeOptions
    engine: Transcriber
    chunk_slots: RequestLimiter  # chunks read and encoded at once (bounds memory)
    budget: Budget
    ledger: OutputLedger
    scratch: Path | None = None  # temporary audio of this run (voxflow.scratch)
    translator: OpenRouterChat | None = None  # --translate-to through OpenRouter chat
    minutes_chat: OpenRouterChat | None = None  # --minutes through OpenRouter chat
    aborted: RunAbort | None = None  # set by the first task that aborts: the rest do not start

    @property
    def checkpoint_dir(self) -> Path:
        return self.out.state_dir() / "chunks"


RESOURCES: PerProcess[RunResources] = PerProcess(on_drop=lambda res: scratch.release(res.scratch))


def resources_for(spec: RunSpec) -> RunResources:
    """This process's resources for the run (built, engine checked, on first use)."""
    return RESOURCES.get(spec.run_id, lambda: prepared(build_resources(spec)))


def prepared(res: RunResources) -> RunResources:
    asyncio.run(res.engine.prepare())  # key, model, pricing: fail fast
    if res.translator is not None:
        asyncio.run(res.translator.prepare())
    if res.minutes_chat is not None:
        asyncio.run(res.minutes_chat.prepare())
    return res


def build_resources(
    spec: RunSpec, engine: Transcriber | None = None, ledger: OutputLedger | None = None
) -> RunResources:
    settings = spec.settings
    engine = engine or get_transcriber(settings)
    remote = not is_local(settings.transcription_model)
    limiter = request_limiter(
        settings.concurrency, spec.run_id, remote=remote or bool(settings.chat_targets) or settings.minutes
    )
    engine.use_limiter(limiter)
    out = OutputTree(settings.out)
    return RunResources(
        spec=spec,
        out=out,
        options=transcribe_options(settings),
        engine=engine,
        chunk_slots=RequestLimiter(chunks_read_ahead(engine, settings)),
        budget=Budget(settings.budget_usd),
        ledger=ledger or OutputLedger.load(out, CatalogIndex.load(out), writer_name(settings)),
        translator=chat_translator(settings, limiter),
        minutes_chat=minutes_writer(settings, limiter),
    )


def chunks_read_ahead(engine: Transcriber, settings: Settings) -> int:
    """Chunks read and encoded at once: two per request in flight, or the engine's own bound
    (the embedded one transcribes one at a time, so more would only wait in memory)."""
    return engine.waiting_chunks or 2 * settings.concurrency


@dataclass(frozen=True)
class RecordingOutcome:
    """What a recording's task hands back to the planning process, serialisable."""

    result: RecordingResult | None  # None: the run was interrupted before the recording finished
    claims: tuple[dict[str, Any], ...] = ()  # ``outputs`` rows of the sidecars it wrote
    left_alone: tuple[str, ...] = ()  # sidecar files voxflow did not write and did not replace
    checkpoints: str | None = None  # its chunk checkpoints: dropped once the catalog has the rows
    translations: tuple[dict[str, Any], ...] = ()  # ``translations`` rows of its chat translations
    aborted: RunAbort | None = None  # a translation met a RunAbort after the recording was done
    minutes: tuple[dict[str, Any], ...] = ()  # its ``minutes`` row (--minutes)


def transcribe_recording(rec: Recording, spec: RunSpec) -> RecordingOutcome:
    """Transcribe one recording and write its sidecars (never raises, except RunAbort, which
    stops the run). Its catalog rows are written by the planning process from the outcome;
    an interrupted recording has none (its finished chunks stay checkpointed)."""
    if interrupts.requested():
        return RecordingOutcome(None)
    res = resources_for(spec)
    started = time.time()
    progress.emit("started", recording=rec.rel_path)
    if res.aborted:
        return RecordingOutcome(
            failed_result(rec, NotStarted.after(res.aborted), res.options_hash, res.options.model, started)
        )
    try:
        return _transcribe(rec, res, started)
    except RunAbort as exc:
        res.aborted = res.aborted or exc
        raise
    except Exception as exc:  # a bug or an infrastructure fault: still one clear row
        if interrupts.requested():  # e.g. ffmpeg got the terminal's Ctrl-C too
            return RecordingOutcome(None)
        return RecordingOutcome(failed_result(rec, exc, res.options_hash, res.options.model, started))


def _transcribe(rec: Recording, ctx: RunResources, started: float) -> RecordingOutcome:
    suffix = "." + rec.rel_path.rsplit(".", 1)[-1] if "." in rec.rel_path else ""
    with (
        local_copy(rec.uri, suffix=suffix, folder=_scratch_of(ctx)) as path,
        tempfile.TemporaryDirectory(prefix="rec-", dir=_scratch_of(ctx)) as tmp,
    ):
        info = media.probe(path, ctx.settings.audio_language)
        prepared = media.prepare_audio(
            path,
            str(Path(tmp) / "audio.wav"),
            silence_db=ctx.settings.silence_db,
            min_silence_s=ctx.settings.min_silence_s,
            expected_ms=info.duration_ms,
            stream=info.audio_stream,
        )
        progress.emit("probed", recording=rec.rel_path, duration_ms=prepared.duration_ms)
        transcript, stats = asyncio.run(_transcribe_and_close(prepared, rec, ctx))
        translation = _translation(prepared, transcript, ctx)
    warnings = [w for w in (info.stream_note, prepared.decode_warning, stats.note, stats.gate_note) if w]
    # Cues end inside the recording as any player sees it: the shorter of the container's
    # duration and what decoded (they differ by encoder padding, or by a truncated tail).
    playable_ms = min(prepared.duration_ms, info.duration_ms or prepared.duration_ms)
    if translation is not None and translation.language == language_code(transcript.language):
        # mostly in the target language: its sidecars are the translation (English throughout);
        # the catalog keeps what was said
        writes = [write_outputs(rec, translation, playable_ms, ctx.ledger, ctx.spec)]
    else:
        writes = [write_outputs(rec, transcript, playable_ms, ctx.ledger, ctx.spec)]
        if translation is not None:
            writes.append(write_outputs(rec, translation, playable_ms, ctx.ledger, ctx.spec))
    translated = chat_translations(rec, transcript, playable_ms, ctx)
    writes += translated.writes
    minutes = chat_minutes(rec, transcript, playable_ms, ctx)
    writes += minutes.writes
    left_alone = [note for w in writes for note in w.left_alone]
    outputs = [uri for w in writes for uri in w.written]
    result = RecordingResult(
        recording=rec,
        status="done",
        model=ctx.options.model,
        options_hash=ctx.options_hash,
        duration_ms=prepared.duration_ms,
        language=language_code(transcript.language),
        language_probability=transcript.language_probability,
        languages=transcript.languages,
        text=transcript.text,
        segments=transcript.segments,
        n_chunks=stats.chunks,
        attempts=stats.requests,
        cost_usd=transcript.cost_usd + translated.cost_usd + minutes.cost_usd,
        started_at=started,
        finished_at=time.time(),
        outputs=tuple(outputs),
        warnings=(*warnings, *left_alone, *translated.warnings, *minutes.warnings),
        truncated=prepared.truncated,
        quality=_quality(transcript, prepared, stats),
        worker=where_am_i(),
        audio_stream=info.audio_stream,
    )
    claims = tuple(c.row() for w in writes for c in w.claims)
    folder = str(stats.checkpoints.folder) if stats.checkpoints else None
    aborted = translated.aborted or minutes.aborted
    return RecordingOutcome(result, claims, tuple(left_alone), folder, translated.rows, aborted, minutes.rows)


def chat_translations(rec: Recording, transcript: Transcript, duration_ms: int, ctx: RunResources) -> ChatOutcome:
    """The --translate-to languages made through OpenRouter chat, written beside the original."""
    targets = targets_for(ctx.settings, transcript.language)
    if ctx.translator is None or not targets:
        return ChatOutcome()
    job = TranslationJob(
        rec, transcript, duration_ms, targets, ctx.translator, ctx.budget, ctx.ledger, ctx.settings, ctx.run_id,
        writer_name(ctx.settings),
    )  # fmt: skip
    translated = translate_recording(job)
    ctx.aborted = ctx.aborted or translated.aborted  # the recording is done; what comes after does not start
    return translated


def chat_minutes(rec: Recording, transcript: Transcript, duration_ms: int, ctx: RunResources) -> ChatOutcome:
    """The recording's --minutes, made through OpenRouter chat and written beside its sidecars."""
    if ctx.minutes_chat is None or ctx.aborted:
        return ChatOutcome()
    job = MinutesJob(
        rec, transcript, duration_ms, ctx.minutes_chat, ctx.budget, ctx.ledger, ctx.settings, ctx.run_id,
        writer_name(ctx.settings),
    )  # fmt: skip
    made = minutes_for(job)
    ctx.aborted = ctx.aborted or made.aborted
    return made


def _quality(transcript: Transcript, prepared: PreparedAudio, stats: ChunkStats) -> Quality:
    pauses_ms = sum(s.duration_ms for s in prepared.silences)
    return Quality(
        segments_dropped=stats.segments_dropped,
        max_chars_per_s=stats.max_chars_per_s,
        speech_s=sum(s.end_ms - s.start_ms for s in transcript.segments) / 1000,
        detected_speech_s=max(prepared.duration_ms - pauses_ms, 0) / 1000,
    )


def _scratch_of(ctx: RunResources) -> Path:
    """The run's scratch folder (made on first use, e.g. by a worker process)."""
    if ctx.scratch is None or not ctx.scratch.is_dir():
        ctx.scratch = scratch.run_scratch(ctx.out, ctx.run_id)
    return ctx.scratch


def _translation(prepared: PreparedAudio, transcript: Transcript, ctx: RunResources) -> Transcript | None:
    """The English version --translate-to asks for, when any of the recording is in another
    language: each chunk translated offline by the multilingual model (Whisper's translate
    task; English stretches kept as they were said)."""
    from voxflow.engines.local import LocalTranscriber

    target = "en" if ctx.settings.offline_translation else None
    engine = ctx.engine
    if not target or _all_in(transcript, target) or not transcript.segments:
        return None
    if not isinstance(engine, LocalTranscriber) or engine.english_only:
        return None
    max_ms = round(min(ctx.settings.max_chunk_s, engine.max_chunk_s) * 1000)
    spans = media.plan_chunks(
        prepared.duration_ms, prepared.silences, max_ms, quietest=lambda w: media.quietest_point(prepared.wav_path, w)
    )
    stats = ChunkStats()
    parts = []
    for span in (s for s in spans if not all_silence(s, prepared.silences)):
        part = engine.translate(media.read_pcm(prepared.wav_path, span), ctx.settings.language)
        parts.append(gated(clamped(part.shifted(span.start_ms), span), stats))
    return replace(stitch(parts, target), language=target)


def _all_in(transcript: Transcript, language: str) -> bool:
    """Whether every stretch of speech is in ``language`` (a recording that switches
    language has seconds per language; one under a second is noise)."""
    spoken = [code for code, seconds in transcript.languages if seconds >= MIN_LANGUAGE_S] or [transcript.language]
    return all(language_code(code) == language for code in spoken)


async def _transcribe_and_close(
    prepared: PreparedAudio, rec: Recording, ctx: RunResources
) -> tuple[Transcript, ChunkStats]:
    """Transcribe in this thread's event loop, then close the engine's pool for this loop."""
    try:
        if is_local(ctx.options.model):
            return await transcribe_prepared(prepared, rec, ctx)
        from voxflow.engines.openrouter import count_requests

        with count_requests() as sent:
            transcript, stats = await transcribe_prepared(prepared, rec, ctx)
        stats.requests = sent.value
        return transcript, stats
    finally:
        await ctx.engine.aclose()


def write_outputs(
    rec: Recording, transcript: Transcript, duration_ms: int, ledger: OutputLedger, spec: RunSpec
) -> SidecarWrites:
    """write_sidecars within a run (the claims reach the catalog with the recording's rows)."""
    writer = writer_name(spec.settings)
    return write_sidecars(rec, transcript, duration_ms, ledger, spec.settings, run_id=spec.run_id, writer=writer)
