"""One prepared recording, chunk by chunk: cut at pauses, transcribed concurrently under the
run's limits, checkpointed, gated, clamped to their chunk, and stitched on the recording's clock."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxflow import interrupts, media, progress
from voxflow.engines.base import TranscribeOptions, Transcriber
from voxflow.errors import (
    RequestRejected,
    VoxflowError,
    most_severe,
)
from voxflow.gates import GatedSegments, gate_segments
from voxflow.io.storage import write_local_atomic
from voxflow.models import (
    AudioChunk,
    PreparedAudio,
    Recording,
    Segment,
    Span,
    Transcript,
    Word,
    language_code,
)

if TYPE_CHECKING:
    from voxflow.transcribe.job import RunResources


MIN_SPLIT_MS = 2_000  # a 413 never splits a chunk below this


ALIGNMENT_MODEL = "local/tiny.en"  # times text-only answers


MIN_LANGUAGE_S = 0.05  # less speech than this in a language is not listed in Transcript.languages


@dataclass
class ChunkStats:
    chunks: int = 0
    requests: int = 0
    note: str = ""
    checkpoints: ChunkCheckpoints | None = None  # cleared once the catalog has the result
    recording: str = ""  # rel_path, for progress events
    segments_dropped: int = 0  # refused by a hallucination gate (voxflow/gates.py)
    max_chars_per_s: float = 0.0  # the fastest kept segment

    def count_gated(self, gated: GatedSegments) -> None:
        self.segments_dropped += gated.n_dropped
        self.max_chars_per_s = max(self.max_chars_per_s, gated.max_chars_per_s)

    @property
    def gate_note(self) -> str:
        if not self.segments_dropped:
            return ""
        return (
            f"{self.segments_dropped} segment(s) dropped by the hallucination gates (looping or impossibly fast text)"
        )


async def transcribe_prepared(
    prepared: PreparedAudio, rec: Recording, ctx: RunResources
) -> tuple[Transcript, ChunkStats]:
    """Transcribe a prepared recording chunk by chunk, concurrently, and stitch the parts."""
    stats = ChunkStats(recording=rec.rel_path)
    if prepared.peak_db < media.SILENT_PEAK_DB:
        stats.note = f"no speech: the recording is silent (peak {prepared.peak_db:.0f} dB)"
        return Transcript(text="", language=ctx.settings.language or "und"), stats
    max_ms = round(min(ctx.settings.max_chunk_s, ctx.engine.max_chunk_s) * 1000)
    spans = media.plan_chunks(
        prepared.duration_ms,
        prepared.silences,
        max_ms,
        quietest=lambda w: media.quietest_point(prepared.wav_path, w),
    )
    speech = [s for s in spans if not all_silence(s, prepared.silences)]
    stats.chunks = len(spans)
    checkpoints = ChunkCheckpoints(ctx.checkpoint_dir / rec.recording_id / ctx.options_hash)
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_transcribe_span(span, prepared, ctx, checkpoints, stats)) for span in speech]
    except ExceptionGroup as group_error:
        raise most_severe(group_error) from None
    parts = [t.result() for t in tasks]
    stats.checkpoints = checkpoints
    return stitch(parts, ctx.settings.language), stats


def all_silence(span: Span, silences: tuple[Span, ...]) -> bool:
    return any(s.start_ms <= span.start_ms and span.end_ms <= s.end_ms for s in silences)


async def _transcribe_span(
    span: Span,
    prepared: PreparedAudio,
    ctx: RunResources,
    checkpoints: ChunkCheckpoints,
    stats: ChunkStats,
) -> Transcript:
    """One chunk (from its checkpoint if an earlier run got it); 413 splits it in two."""
    saved = checkpoints.load(span)
    if saved is not None:
        progress.emit("chunk", recording=stats.recording, duration_ms=span.duration_ms)
        return saved
    if interrupts.requested():
        raise interrupts.Interrupted("the run was interrupted before this chunk")
    try:
        async with (
            ctx.chunk_slots.slot(),
            ctx.budget.reserve(_estimate(ctx.engine, span)) as reservation,  # held while the chunk is out
        ):
            if interrupts.requested():  # the wait for a slot outlasted a stop request
                raise interrupts.Interrupted("the run was interrupted before this chunk")
            chunk = _encode(span, prepared, ctx.engine)
            stats.requests += 1
            part = await ctx.engine.transcribe(chunk, ctx.options)
            reservation.settle(part.cost_usd)
    except RequestRejected as exc:
        if exc.status != 413 or span.duration_ms < 2 * MIN_SPLIT_MS:
            raise
        return await _split_and_transcribe(span, prepared, ctx, checkpoints, stats)
    if not part.timed and part.text.strip():
        part = await _timed_from_text(part, span, prepared)
    part = gated(clamped(part.shifted(span.start_ms), span), stats)
    checkpoints.save(span, part)
    progress.emit("chunk", recording=stats.recording, duration_ms=span.duration_ms)
    return part


def gated(part: Transcript, stats: ChunkStats) -> Transcript:
    """``part`` without the segments a hallucination gate refuses (counted in ``stats``)."""
    gated = gate_segments(part.segments)
    stats.count_gated(gated)
    if not gated.n_dropped:
        return part
    return replace(part, text=" ".join(s.text.strip() for s in gated.kept), segments=gated.kept)


async def _split_and_transcribe(
    span: Span,
    prepared: PreparedAudio,
    ctx: RunResources,
    checkpoints: ChunkCheckpoints,
    stats: ChunkStats,
) -> Transcript:
    middle = Span(span.start_ms + span.duration_ms // 4, span.end_ms - span.duration_ms // 4)
    cut = media.quietest_point(prepared.wav_path, middle)
    halves = [Span(span.start_ms, cut), Span(cut, span.end_ms)]
    parts = [await _transcribe_span(h, prepared, ctx, checkpoints, stats) for h in halves]
    return stitch(parts, ctx.settings.language)


async def _timed_from_text(part: Transcript, span: Span, prepared: PreparedAudio) -> Transcript:
    """Timings for a text-only answer: align its words with the embedded engine's timed words
    for the same chunk (times relative to the chunk), or spread them evenly without it."""
    from voxflow.engines.local import LocalTranscriber
    from voxflow.transcribe.align import align_words, even_timing

    span_ms = span.duration_ms
    try:
        local = LocalTranscriber(ALIGNMENT_MODEL)
        pcm = media.read_pcm(prepared.wav_path, span)
        heard = await local.transcribe(AudioChunk(0, 0, span_ms, pcm, "pcm"), TranscribeOptions(ALIGNMENT_MODEL))
        reference = [w for s in heard.segments for w in s.words]
        segments = align_words(part.text, reference, span_ms) if reference else even_timing(part.text, span_ms)
    except VoxflowError:
        segments = even_timing(part.text, span_ms)
    return replace(part, segments=segments, timed=True)


def _estimate(engine: Transcriber, span: Span) -> float:
    return engine.estimate_cost(span.duration_ms)


def _encode(span: Span, prepared: PreparedAudio, engine: Transcriber) -> AudioChunk:
    pcm = media.read_pcm(prepared.wav_path, span)
    data = media.encode_pcm(pcm, engine.upload_format)
    if len(data) > engine.max_upload_bytes():
        raise RequestRejected(f"chunk of {span.duration_ms / 1000:.0f} s is too large", status=413)
    return AudioChunk(
        index=0,
        offset_ms=span.start_ms,
        duration_ms=span.duration_ms,
        data=data,
        format=engine.upload_format,
    )


def clamped(part: Transcript, span: Span) -> Transcript:
    """Keep an engine's times inside the chunk it was given."""

    def clamp(ms: int) -> int:
        return min(max(ms, span.start_ms), span.end_ms)

    segments = tuple(
        Segment(
            clamp(s.start_ms),
            max(clamp(s.end_ms), clamp(s.start_ms)),
            s.text,
            tuple(
                Word(
                    clamp(w.start_ms),
                    max(clamp(w.end_ms), clamp(w.start_ms)),
                    w.word,
                    w.confidence,
                    w.speaker,
                )
                for w in s.words
            ),
            s.speaker,
            s.confidence,
        )
        for s in part.segments
    )
    if not segments and part.text.strip():  # text only: one segment over the chunk for now
        segments = (Segment(span.start_ms, span.end_ms, part.text.strip()),)
    return replace(part, segments=segments)


def stitch(parts: list[Transcript], language_hint: str | None = None) -> Transcript:
    """Join chunk transcripts (already on the recording's clock) in order."""
    segments = tuple(s for p in parts for s in p.segments)
    heard = Counter[str]()
    for p in parts:
        heard.update(_speech_seconds(p))
    heard.pop("und", None)
    language = heard.most_common(1)[0][0] if heard else language_code(language_hint)
    return Transcript(
        text=" ".join(p.text.strip() for p in parts if p.text.strip()),
        language=language,
        segments=segments,
        cost_usd=sum(p.cost_usd for p in parts),
        timed=all(p.timed for p in parts),
        language_probability=_probability_of(language, parts),
        languages=tuple((code, round(s, 1)) for code, s in heard.most_common() if s >= MIN_LANGUAGE_S),
    )


def _speech_seconds(part: Transcript) -> Counter[str]:
    """Seconds of speech per language in ``part`` (a token amount when it has no segments)."""
    if part.languages:
        return Counter({language_code(code): seconds for code, seconds in part.languages})
    seconds = sum(s.end_ms - s.start_ms for s in part.segments) / 1000
    return Counter({language_code(part.language): seconds or 0.001})


def _probability_of(language: str, parts: list[Transcript]) -> float | None:
    """Speech-weighted detection probability of ``language`` over the parts that detected one
    (a part whose own language differs counts as 0); None when no part detected."""
    weighed = [(sum(_speech_seconds(p).values()), p) for p in parts if p.language_probability is not None]
    total = sum(w for w, _ in weighed)
    if not total:
        return None
    sure = sum(w * p.language_probability for w, p in weighed if language_code(p.language) == language)  # type: ignore[operator]
    return round(sure / total, 4)


class ChunkCheckpoints:
    """One JSON file per finished chunk, so a killed run resends only what never came back."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _file(self, span: Span) -> Path:
        return self.folder / f"{span.start_ms}-{span.end_ms}.json"

    def load(self, span: Span) -> Transcript | None:
        try:
            return transcript_from_dict(json.loads(self._file(span).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, span: Span, part: Transcript) -> None:
        write_local_atomic(self._file(span), json.dumps(asdict(part)).encode())

    def clear(self) -> None:
        if self.folder.exists():
            for f in self.folder.glob("*.json"):
                f.unlink(missing_ok=True)
            for d in (self.folder, self.folder.parent):
                try:
                    d.rmdir()
                except OSError:
                    break


def transcript_from_dict(data: dict[str, Any]) -> Transcript:
    segments = tuple(
        Segment(
            s["start_ms"],
            s["end_ms"],
            s["text"],
            tuple(Word(**w) for w in s["words"]),
            s["speaker"],
            s["confidence"],
        )
        for s in data["segments"]
    )
    languages = tuple((str(code), float(seconds)) for code, seconds in data.get("languages", ()))
    return Transcript(
        data["text"],
        data["language"],
        segments,
        data["cost_usd"],
        data["timed"],
        data.get("language_probability"),
        languages,
    )
