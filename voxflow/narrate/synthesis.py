"""Speech for a book's chunks: synthesised concurrently under the run's limits, each chunk
cached on disk the moment it arrives (frames + sha256: a damaged entry is made again).
Once the run is asked to stop (:mod:`voxflow.interrupts`), no new chunk starts: the ones in
flight finish and are cached, then :class:`~voxflow.interrupts.Interrupted` is raised."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import threading
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxflow import interrupts, progress
from voxflow.engines.base import SpeechAudio, SynthesisOptions, Synthesizer
from voxflow.errors import AudioError, RequestRejected, most_severe
from voxflow.io.storage import write_local_atomic
from voxflow.limits import Budget, RequestLimiter
from voxflow.narrate.assembly.chunks import ChunkAudio
from voxflow.narrate.document import TextChunk
from voxflow.narrate.prepare import split_long

MIN_SPLIT_CHARS = 40  # a 413 never splits a chunk into pieces shorter than this


class ChunkCache:
    """Synthesised chunks on local disk: ``<key[:2]>/<key>.wav`` + ``.json`` (cost, generation
    id, and what makes the entry trustworthy: the sha256 of the spoken text, the frame count
    and the sha256 of the PCM). Written atomically, the JSON last: an entry is reused only
    when its record is there and the WAV's frames and checksum match it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _wav(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.wav"

    def get(self, key: str, spoken: str | None = None) -> ChunkAudio | None:
        """The entry, or None when missing; raises DamagedCacheEntry when it does not match
        its record (truncated, altered, or made for another text)."""
        path = self._wav(key)
        try:
            record = json.loads(path.with_suffix(".json").read_bytes())
            with wave.open(str(path), "rb") as wav:
                rate, frames = wav.getframerate(), wav.getnframes()
                pcm = wav.readframes(frames)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, wave.Error, EOFError) as exc:
            raise DamagedCacheEntry(f"speech-cache entry {path.name} is unreadable ({exc})") from exc
        if "pcm_sha256" not in record and _whole(pcm, frames, record):  # an entry of an older voxflow
            record = {**record, "frames": frames, "pcm_sha256": hashlib.sha256(pcm).hexdigest()}
            write_local_atomic(path.with_suffix(".json"), json.dumps(record).encode())
        problem = _cache_mismatch(record, pcm, frames, spoken)
        if problem:
            raise DamagedCacheEntry(f"speech-cache entry {path.name} is damaged ({problem})")
        return ChunkAudio(str(path), rate, frames)

    def put(self, key: str, speech: SpeechAudio, meta: Mapping[str, Any]) -> ChunkAudio:
        path = self._wav(key)
        frames = len(speech.pcm) // (2 * speech.channels)
        record = {
            **meta,
            "cost_usd": speech.cost_usd,
            "generation_id": speech.generation_id,
            "sample_rate": speech.sample_rate,
            "channels": speech.channels,
            "frames": frames,
            "pcm_sha256": hashlib.sha256(speech.pcm[: frames * 2 * speech.channels]).hexdigest(),
        }
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(speech.channels)
            wav.setsampwidth(2)
            wav.setframerate(speech.sample_rate)
            wav.writeframes(speech.pcm)
        write_local_atomic(path, buffer.getvalue())
        write_local_atomic(path.with_suffix(".json"), json.dumps(record).encode())
        return ChunkAudio(str(path), speech.sample_rate, frames)

    def forget(self, key: str) -> None:
        self._wav(key).with_suffix(".json").unlink(missing_ok=True)
        self._wav(key).unlink(missing_ok=True)


class DamagedCacheEntry(AudioError):
    """A speech-cache entry that does not match its record: synthesised again."""


def _whole(pcm: bytes, frames: int, record: Mapping[str, Any]) -> bool:
    """The WAV holds every frame its header announces."""
    return frames > 0 and len(pcm) == frames * 2 * int(record.get("channels") or 1)


def _cache_mismatch(record: Mapping[str, Any], pcm: bytes, frames: int, spoken: str | None) -> str | None:
    """Why a cache entry cannot be trusted, or None."""
    if "frames" not in record or "pcm_sha256" not in record:
        return "truncated, and no frame count or checksum recorded"
    if record["frames"] != frames or not _whole(pcm, frames, record):
        return f"{frames} frames where {record['frames']} were written"
    if hashlib.sha256(pcm).hexdigest() != record["pcm_sha256"]:
        return "PCM checksum mismatch"
    if spoken is not None and record.get("text_sha256") != hashlib.sha256(spoken.encode()).hexdigest():
        return "made for another text"
    return None


@dataclass
class SynthStats:
    chunks: int = 0
    synthesised: int = 0
    cached: int = 0
    cost_usd: float = 0.0
    cost_by_key: dict[str, float] = field(default_factory=dict)
    generation_ids: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # damaged cache entries, synthesised again


async def synthesise_chunks(
    chunks: Sequence[TextChunk],
    synth: Synthesizer,
    options: SynthesisOptions,
    cache: ChunkCache,
    limiter: RequestLimiter,
    budget: Budget,
    *,
    label: str = "",
    titles: Mapping[int, str] | None = None,
    stats: SynthStats | None = None,
) -> tuple[dict[str, ChunkAudio], SynthStats]:
    """Audio for every chunk: from the cache, or synthesised concurrently under ``limiter``.

    An engine that gates its own HTTP attempts (it has a ``limiter`` attribute) gets the
    run's limiter and is not gated twice; any other engine call holds one slot.
    """
    digest = options.digest()
    audio: dict[str, ChunkAudio] = {}
    todo: dict[str, TextChunk] = {}
    stats = stats if stats is not None else SynthStats()
    for chunk in chunks:
        key = chunk.cache_key(digest)
        if key in audio or key in todo:
            continue
        hit = _cached(cache, key, chunk, stats)
        if hit is not None:
            audio[key] = hit
        else:
            todo[key] = chunk
    stats.chunks, stats.cached = len(audio) + len(todo), len(audio)
    progress.emit("narration.chunks", document=label, to_speak=len(todo))
    titles = titles or {}
    gated = synth.use_limiter(limiter)  # True: the engine holds a slot per request itself
    # … then at most the limiter's size of chunks enter the engine: the others wait here,
    # where a stop request still keeps them from starting
    entering = asyncio.Semaphore(limiter.max_limit) if gated else contextlib.nullcontext()
    lock = threading.Lock()

    async def speak(text: str) -> SpeechAudio:
        _unless_stopping()
        budget.check(synth.estimate_cost(len(text)))
        async with contextlib.nullcontext() if gated else limiter.slot():
            _unless_stopping()  # the wait for a slot may have outlasted a stop request
            speech = await synth.synthesise(text, options)
        budget.add(speech.cost_usd)
        return speech

    async def speak_or_split(text: str) -> SpeechAudio:
        """413 (the request is too large for the provider): split at the best clause
        boundary into two halves, speak each, join them."""
        try:
            return await speak(text)
        except RequestRejected as exc:
            if exc.status != 413 or len(text) < 2 * MIN_SPLIT_CHARS:
                raise
        halves = split_long(text, len(text) // 2 + 1, min_fraction=0.5)
        return join_speech([await speak_or_split(half) for half in halves])

    async def one(key: str, chunk: TextChunk) -> None:
        try:
            async with entering:
                speech = await speak_or_split(chunk.spoken)
        except interrupts.Interrupted:
            return  # not started: its siblings in flight carry on and are cached
        meta = {
            "model": options.model,
            "voice": options.voice,
            "chars": len(chunk.spoken),
            "text_sha256": hashlib.sha256(chunk.spoken.encode()).hexdigest(),
        }
        stored = await asyncio.to_thread(cache.put, key, speech, meta)
        with lock:
            audio[key] = stored
            stats.synthesised += 1
            stats.cost_usd += speech.cost_usd
            stats.cost_by_key[key] = speech.cost_usd
            if speech.generation_id:
                stats.generation_ids.append(speech.generation_id)
        chapter = titles.get(chunk.chapter_index, "")
        spoken = {"chars": len(chunk.spoken), "cost_usd": speech.cost_usd}
        progress.emit("narration.chunk", document=label, chapter=chapter, **spoken)

    try:
        async with asyncio.TaskGroup() as group:
            for key, chunk in todo.items():
                group.create_task(one(key, chunk))
    except BaseExceptionGroup as group_error:
        raise most_severe(group_error) from None
    finally:
        with contextlib.suppress(Exception):
            await synth.aclose()
    if len(audio) < stats.chunks:
        raise interrupts.Interrupted(f"stopped with {stats.chunks - len(audio)} of {stats.chunks} chunks to synthesise")
    return audio, stats


def _unless_stopping() -> None:
    if interrupts.requested():
        raise interrupts.Interrupted("the run was asked to stop before this chunk")


def _cached(cache: ChunkCache, key: str, chunk: TextChunk, stats: SynthStats) -> ChunkAudio | None:
    """A trustworthy cache entry for ``chunk``, or None (a damaged one is dropped and noted)."""
    try:
        return cache.get(key, chunk.spoken)
    except DamagedCacheEntry as exc:
        stats.warnings.append(f"{exc}: synthesised again")
        cache.forget(key)
        return None


def join_speech(parts: Sequence[SpeechAudio], gap_ms: int = 250) -> SpeechAudio:
    """Pieces of one chunk's speech back to back (a short pause between), at the first
    piece's rate, mono."""
    from voxflow import media

    rate = parts[0].sample_rate
    silence = bytes(2 * (rate * gap_ms // 1000))
    pcm = []
    for part in parts:
        data = part.pcm
        if part.sample_rate != rate or part.channels != 1:
            data = media.resample_pcm(data, part.sample_rate, rate, part.channels)
        pcm.append(data)
    ids = [p.generation_id for p in parts if p.generation_id]
    return SpeechAudio(
        pcm=silence.join(pcm),
        sample_rate=rate,
        cost_usd=sum(p.cost_usd for p in parts),
        generation_id=",".join(ids) or None,
    )
