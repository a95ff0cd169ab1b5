"""The narration job in plain Python (no Prefect): plan a run, narrate one document, finish.
``flows/narrate.py`` orchestrates these; tests call them directly.

plan_narration:   scan the corpus (.txt/.md/.epub) → for each document, the cheap skip check
                  (content hash + engine options + assembly options + lexicon + output folder
                  against the book's done-marker, and its outputs still there) — an unchanged
                  book is skipped before anything is read, synthesised or paid for.
narrate_document: read → prepare (chapters, sentences, chunks ≤ the engine's limit, lexicon) →
                  synthesise the chunks concurrently under the run's request limit, each chunk
                  cached on disk by (text hash, model, voice, options) the moment it arrives →
                  assemble, master, tag and write the book (all files appear at once) → one
                  ``narrations`` row per chapter. Errors become one failed row naming the file
                  and the reason; only a RunAbort (auth, credits, unknown model, budget) stops
                  the run.
finish_narration: flush the catalog, write ``runs/<run_id>.json`` (with each file's mastering
                  report), and the exit code of design §3.

Resuming is by construction: a chunk in the cache is never synthesised again (a kill -9
mid-book loses at most the chunks in flight), and a lexicon change alters only the chunks
whose text contains the changed word, so only those are synthesised again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import math
import os
import re
import threading
import time
import wave
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from voxflow import interrupts, progress, scratch
from voxflow.catalog import CatalogWriter
from voxflow.cluster import request_limiter, where_am_i
from voxflow.engines.base import SpeechAudio, SynthesisOptions, Synthesizer, get_synthesizer
from voxflow.engines.base import is_local as is_local_model
from voxflow.errors import AudioError, ConfigError, RequestRejected, RunAbort, SourceError, VoxflowError, most_severe
from voxflow.fsnames import printable_name, raw_name
from voxflow.limits import Budget, RequestLimiter
from voxflow.models import Recording
from voxflow.narrate.assembly import Audiobook, render_book
from voxflow.narrate.assembly.chunks import ChunkAudio
from voxflow.narrate.assembly.options import AssemblyOptions, BookMeta, Pauses
from voxflow.narrate.assembly.timeline import ChapterAudio, safe_name
from voxflow.narrate.document import PreparedDocument, TextChunk
from voxflow.narrate.lexicon import Lexicon
from voxflow.narrate.prepare import DEFAULT_MAX_CHARS, check_chunks, credits_chunks, prepare_document, split_long
from voxflow.narrate.read import document_format, read_document
from voxflow.runs import PerProcess
from voxflow.settings import Settings
from voxflow.sources import (
    HashCache,
    OutputTree,
    content_hash,
    list_source,
    new_run_id,
    resolve,
    write_local_atomic,
)

NARRATION_VERSION = "1"  # bump when the output layout changes: every book is re-assembled
# Spoken characters a second, for estimates: Piper's joe voice measured ≈ 18 (chunks as
# synthesised, before voxflow's pauses); API voices assumed 15 (as the OpenRouter engine does).
LOCAL_CHARS_PER_SECOND = 18.0
SPOKEN_CHARS_PER_SECOND = 15.0
LATIN_LANGUAGES = frozenset(
    [
        "en",
        "fr",
        "de",
        "es",
        "it",
        "pt",
        "nl",
        "da",
        "sv",
        "no",
        "nb",
        "nn",
        "fi",
        "pl",
        "cs",
        "sk",
        "hu",
        "ro",
        "ca",
        "cy",
        "is",
        "lb",
        "sw",
        "tr",
        "vi",
        "id",
        "ms",
        "sl",
        "hr",
        "et",
        "lv",
        "lt",
        "eu",
        "gl",
        "ga",
        "mt",
        "af",
        "sq",
    ]
)
COVER_NAMES = ("cover.jpg", "cover.jpeg", "cover.png")
# A corpus folder's own documentation is not a book.
_NOT_BOOKS = re.compile(r"^(readme|licen[cs]e|changelog|contributing|notice|copying)(\.|$)", re.IGNORECASE)
MIN_SPLIT_CHARS = 40  # a 413 never splits a chunk into pieces shorter than this


# --------------------------------------------------------------------------- options


@dataclass(frozen=True, slots=True)
class NarrationOptions:
    """What changes a narration besides the settings (model, voice, concurrency, budget)."""

    per_chapter: bool = True
    formats: tuple[str, ...] = ("mp3",)
    instructions: str | None = None
    speed: float | None = None
    max_chunk_chars: int | None = None  # None: the engine's input limit
    credits: bool = False
    lexicon: tuple[str, ...] = ()  # global lexicon files (a book's own is found beside it)
    pauses: Pauses = field(default_factory=Pauses)
    bitrate: str = "192k"
    max_file_minutes: float = 120.0

    def assembly(self) -> AssemblyOptions:
        return AssemblyOptions(
            per_chapter=self.per_chapter,
            formats=self.formats,
            bitrate=self.bitrate,
            max_file_ms=round(self.max_file_minutes * 60_000),
            credits=self.credits,
            pauses=self.pauses,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> NarrationOptions:
        data = dict(data or {})
        if isinstance(data.get("pauses"), Mapping):
            data["pauses"] = Pauses(**data["pauses"])
        for key in ("formats", "lexicon"):
            if key in data and data[key] is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def parse_formats(fmt: str | Sequence[str] | None) -> tuple[str, ...]:
    """``--format``: mp3 (default), m4b (the MP3s plus one M4B of the same render), both."""
    if fmt is None:
        return ("mp3",)
    values = [v.strip().lower() for v in (fmt.split(",") if isinstance(fmt, str) else fmt)]
    out: list[str] = []
    for v in values:
        if v in ("both", "m4b"):
            out += ["mp3", "m4b"]
        elif v == "mp3":
            out.append("mp3")
        elif v:
            raise ConfigError(f"unknown format {v!r}: use mp3 or m4b")
    return tuple(dict.fromkeys(out)) or ("mp3",)


def synthesis_options(settings: Settings, options: NarrationOptions, model: str) -> SynthesisOptions:
    return SynthesisOptions(model=model, voice=settings.voice, instructions=options.instructions, speed=options.speed)


def voice_is_latin(model: str) -> bool:
    """True for a local Piper voice of a Latin-script language (drop other scripts, emoji)."""
    if not is_local_model(model):
        return False
    try:
        from voxflow.engines.local import resolve_voice

        _onnx, config = resolve_voice(model)
        code = json.loads(Path(config).read_text())["language"]["code"]
    except (ConfigError, OSError, KeyError, TypeError, ValueError):
        return True
    return str(code)[:2].lower() in LATIN_LANGUAGES


def narrator_label(model: str, voice: str | None) -> str:
    name = model.split("/", 1)[-1]
    if voice:
        name += f", voice {voice}"
    return f"a synthetic voice ({name})"


SPEED_RANGE = (0.25, 4.0)  # Piper (length_scale = 1 / speed) and OpenAI-style speech APIs alike


def validate_narration(settings: Settings, options: NarrationOptions) -> None:
    """Refuse, before any work, a setting that would otherwise be silently ignored: one
    ConfigError line naming the flag, its environment variable and what to do."""
    for path, origin in _lexicon_settings(options):
        _check_lexicon(path, origin)
    low, high = SPEED_RANGE
    if options.speed is not None and not low <= options.speed <= high:
        raise ConfigError(
            f"--speed {options.speed:g}: outside the range of {settings.speech_model}: "
            f"use {low:g} to {high:g} (1.0 = normal speed)"
        )
    if settings.voice and is_local_model(settings.speech_model):
        voices = local_voices(settings.speech_model)
        if settings.voice not in voices:
            choice = f"use one of {', '.join(sorted(voices))}" if voices else "it has a single voice: leave --voice out"
            raise ConfigError(
                f"--voice {settings.voice} (VOXFLOW_VOICE): the offline voice {settings.speech_model} has no voice "
                f"{settings.voice!r}: {choice}"
            )


def _lexicon_settings(options: NarrationOptions) -> list[tuple[str, str]]:
    env = os.environ.get("VOXFLOW_LEXICON") or ""
    return [(p, "--lexicon") for p in options.lexicon] + [(p, "VOXFLOW_LEXICON") for p in env.split(os.pathsep) if p]


def _check_lexicon(path: str, origin: str) -> None:
    where = f"--lexicon / VOXFLOW_LEXICON {path}" if origin == "--lexicon" else f"VOXFLOW_LEXICON / --lexicon {path}"
    if not Path(path).expanduser().is_file():
        raise ConfigError(f"{where}: no such file: give an existing .toml or .txt lexicon")
    try:
        Lexicon.load([path])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}: fix the file or leave it out") from None


def local_voices(model: str) -> frozenset[str]:
    """Speaker names of a local Piper voice (empty for a single-speaker voice)."""
    from voxflow.engines.local import resolve_voice

    _onnx, config = resolve_voice(model)
    try:
        speakers = json.loads(Path(config).read_text()).get("speaker_id_map") or {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the voice config {config}: {exc}") from exc
    return frozenset(speakers)


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True, slots=True)
class DocumentRef:
    """One document found by a scan."""

    uri: str
    rel_path: str
    size_bytes: int = 0
    mtime: float = 0.0

    @property
    def format(self) -> str | None:
        return document_format(self.rel_path)

    @property
    def stem(self) -> str:
        name = self.rel_path.rsplit("/", 1)[-1]
        return name.rsplit(".", 1)[0] if "." in name else name


def scan_documents(
    source: str, *, exclude: str | None = None, follow_symlinks: bool = False
) -> tuple[list[DocumentRef], int]:
    """(.txt/.md/.epub documents under ``source`` sorted by path, files ignored), from the same
    listing as recordings (:func:`voxflow.sources.list_source`: regular files only)."""
    listing = list_source(source, exclude=exclude, follow_symlinks=follow_symlinks)
    docs, ignored = [], listing.left_out
    for f in listing.files:
        name = f.rel_path.rsplit("/", 1)[-1]
        if document_format(f.rel_path) is None or ".lexicon." in name or _NOT_BOOKS.match(name):
            ignored += 1
            continue
        docs.append(DocumentRef(f.uri, f.rel_path, f.size_bytes, f.mtime))
    return docs, ignored


def book_keys(docs: Iterable[DocumentRef]) -> dict[str, str]:
    """rel_path → output folder key: the rel path without extension; the extension is kept
    where two documents would share a key (``book.txt`` and ``book.md``)."""
    docs = list(docs)
    plain = {d.rel_path: printable_name(d.rel_path).rsplit(".", 1)[0] for d in docs}
    counts: dict[str, int] = {}
    for key in plain.values():
        counts[key] = counts.get(key, 0) + 1
    return {rel: (key if counts[key] == 1 else f"{key}-{rel.rsplit('.', 1)[-1].lower()}") for rel, key in plain.items()}


def _safe_key(key: str) -> str:
    return "/".join(safe_name(part) for part in key.split("/") if part not in ("", ".", ".."))


def lexicon_files(doc_uri: str, options: NarrationOptions) -> list[str]:
    """Global lexicons (``--lexicon``, ``VOXFLOW_LEXICON``), then the book's own beside it:
    ``<stem>.lexicon.toml`` or ``<stem>.lexicon.txt`` (later entries win)."""
    files = [*options.lexicon]
    if env := os.environ.get("VOXFLOW_LEXICON"):
        files += [p for p in env.split(os.pathsep) if p]
    fs, path = resolve(doc_uri)
    stem = path.rsplit(".", 1)[0]
    for suffix in (".lexicon.toml", ".lexicon.txt"):
        candidate = stem + suffix
        with contextlib.suppress(OSError):
            if fs.exists(candidate):
                files.append(candidate if "file" in str(fs.protocol) else _fetch(fs, candidate))
    return files


def _fetch(fs: Any, path: str) -> str:
    """A bucket file copied to a local temp file (lexicons are small)."""
    import tempfile

    fd, tmp = tempfile.mkstemp(suffix=Path(path).suffix or ".txt", prefix="voxflow-lex-")
    os.close(fd)
    fs.get_file(path, tmp)
    return tmp


# --------------------------------------------------------------------------- chunk cache


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
    gated = synth.use_limiter(limiter)  # True: the engine holds a slot per request itself
    lock = threading.Lock()

    async def speak(text: str) -> SpeechAudio:
        budget.check(synth.estimate_cost(len(text)))
        async with contextlib.nullcontext() if gated else limiter.slot():
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
        speech = await speak_or_split(chunk.spoken)
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
        progress.emit("narration.chunk", document=label, chars=len(chunk.spoken), cost_usd=speech.cost_usd)

    try:
        async with asyncio.TaskGroup() as group:
            for key, chunk in todo.items():
                group.create_task(one(key, chunk))
    except BaseExceptionGroup as group_error:
        raise most_severe(group_error) from None
    finally:
        with contextlib.suppress(Exception):
            await synth.aclose()
    return audio, stats


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


# --------------------------------------------------------------------------- one document


def _now() -> datetime:
    return datetime.now(tz=UTC)


def _job_digest(
    document_id: str,
    sopts: SynthesisOptions,
    options: NarrationOptions,
    lexicon: Lexicon,
    max_chars: int,
    key: str,
) -> str:
    blob = json.dumps(
        {
            "v": NARRATION_VERSION,
            "document": document_id,
            "synthesis": sopts.digest(),
            "assembly": options.assembly().digest(),
            "chunking": [max_chars, options.instructions, options.speed],
            "lexicon": lexicon.digest(),
            "folder": key,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _state_path(out: OutputTree, key: str) -> Path:
    return out.state_dir() / "narrations" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")


def _load_state(out: OutputTree, key: str) -> dict[str, Any] | None:
    path = _state_path(out, key)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class _Job:
    """What a document's skip check computed (reused by the narration itself)."""

    document_id: str
    digest: str
    lexicon: Lexicon
    max_chars: int
    key: str


def _job(
    doc_uri: str,
    key: str,
    settings: Settings,
    options: NarrationOptions,
    synth_model: str,
    max_input_chars: int,
    document_id: str | None = None,
) -> _Job:
    document_id = document_id or content_hash(doc_uri)
    lexicon = Lexicon.load(lexicon_files(doc_uri, options))
    max_chars = min(max_input_chars, options.max_chunk_chars or max_input_chars)
    sopts = synthesis_options(settings, options, synth_model)
    digest = _job_digest(document_id, sopts, options, lexicon, max_chars, key)
    return _Job(document_id, digest, lexicon, max_chars, key)


def skipped_rows(out: OutputTree, job: _Job, run_id: str, *, force: bool = False) -> list[dict[str, Any]] | None:
    """The rows of an unchanged, finished book (status ``skipped``), or None if it needs work.

    Cheap: one small JSON file and an existence check per output; nothing is synthesised.
    """
    if force:
        return None
    state = _load_state(out, job.key)
    if not state or state.get("job") != job.digest or not state.get("rows"):
        return None
    outputs = state.get("outputs") or []
    try:
        if not all(out.fs.exists(resolve(uri)[1]) for uri in outputs):
            return None
    except (OSError, SourceError):
        return None
    now = _now()
    rows = []
    for row in state["rows"]:
        rows.append(
            {
                **row,
                "status": "skipped",
                "run_id": run_id,
                "cost_usd": 0.0,
                "chunks_synthesised": 0,
                "started_at": now,
                "finished_at": now,
                "error_kind": None,
                "error_message": None,
            }
        )
    return rows


def narrate_document(
    doc_uri: str,
    settings: Settings,
    out: OutputTree,
    synth: Synthesizer,
    limiter: RequestLimiter,
    budget: Budget,
    run_id: str,
    *,
    rel_path: str | None = None,
    book_key: str | None = None,
    options: NarrationOptions | None = None,
    force: bool | None = None,
) -> list[dict[str, Any]]:
    """Narrate one document into ``out`` and return its ``narrations`` rows (one per
    chapter; one failed row on error). Raises only RunAbort."""
    options = options or NarrationOptions()
    raw_rel = rel_path or doc_uri.rstrip("/").rsplit("/", 1)[-1]
    rel = printable_name(raw_rel)
    key = _safe_key(book_key or rel.rsplit(".", 1)[0])
    force = settings.force if force is None else force
    started = _now()
    progress.emit("narration.started", document=rel)
    spent = SynthStats()
    try:
        rows = _narrate(
            doc_uri, raw_rel, key, settings, out, synth, limiter, budget, run_id, options, force, started, spent
        )
    except RunAbort:
        raise
    except VoxflowError as exc:
        rows = [_failed_row(doc_uri, raw_rel, synth.model, settings.voice, run_id, exc, started, spent)]
    except Exception as exc:  # a bug or an infrastructure fault: still one clear row
        rows = [_failed_row(doc_uri, raw_rel, synth.model, settings.voice, run_id, exc, started, spent)]
    worker = where_am_i()
    rows = [{**row, "worker": worker} for row in rows]
    progress.emit("narration.finished", document=rel, rows=rows)
    return rows


def _narrate(
    doc_uri: str,
    rel: str,
    key: str,
    settings: Settings,
    out: OutputTree,
    synth: Synthesizer,
    limiter: RequestLimiter,
    budget: Budget,
    run_id: str,
    options: NarrationOptions,
    force: bool,
    started: datetime,
    spent: SynthStats,
) -> list[dict[str, Any]]:
    options.assembly().validate()
    job = _job(doc_uri, key, settings, options, synth.model, synth.max_input_chars)
    rows = skipped_rows(out, job, run_id, force=force)
    if rows is not None:
        return rows
    sopts = synthesis_options(settings, options, synth.model)
    local = is_local_model(synth.model)
    doc = read_document(doc_uri)
    prepared = prepare_document(
        doc, max_chars=job.max_chars, lexicon=job.lexicon, phonemes=local, latin_only=voice_is_latin(synth.model)
    )
    check_chunks(prepared)
    narrator = narrator_label(synth.model, settings.voice)
    credits = None
    chunks = list(prepared.chunks())
    if options.credits:
        credits = credits_chunks(doc.title, doc.author, narrator, lexicon=job.lexicon, phonemes=local)
        chunks += list(credits)
    cache = ChunkCache(out.state_dir() / "tts-cache")
    label = printable_name(rel)
    speaking = synthesise_chunks(chunks, synth, sopts, cache, limiter, budget, label=label, stats=spent)
    audio, stats = asyncio.run(speaking)
    digest = sopts.digest()

    def audio_of(chunks: Iterable[TextChunk]) -> tuple[ChunkAudio, ...]:
        return tuple(_chunk_audio(audio, c, digest) for c in chunks)

    book = [ChapterAudio(ch, audio_of(ch.chunks)) for ch in prepared.chapters]
    credit_audio = None
    if credits:
        opening, closing = credits
        credit_audio = tuple(
            ChapterAudio(_credit_chapter(c, label), audio_of([c]))
            for c, label in ((opening, "Opening Credits"), (closing, "Closing Credits"))
        )
    cover, cover_mime = doc.cover, doc.cover_mime
    if cover is None:
        cover, cover_mime = _cover_beside(doc_uri)
    meta = BookMeta(
        title=doc.title,
        author=doc.author,
        narrator=narrator,
        book_name=key.rsplit("/", 1)[-1],
        cover=cover,
        cover_mime=cover_mime,
        language=doc.language,
        comment=f"Narrated by {narrator} with voxflow; meets the ACX audio spec where the "
        "mastering report says so (ACX does not accept synthetic narration without permission).",
    )
    folder = f"audiobooks/{key}"
    rendered = render_book(book, meta, options.assembly(), out, folder, credits=credit_audio, work_key=job.digest)
    report_rel = f"{folder}/{safe_name(meta.book_name)}.report.json"
    report_uri = out.write_text(report_rel, json.dumps(_book_report(doc_uri, prepared, rendered, stats), indent=2))
    outputs = [*rendered.outputs, report_uri]
    rows = _done_rows(
        doc_uri, rel, job, prepared, rendered, stats, synth.model, settings.voice, run_id, started, outputs, digest
    )
    _save_state(out, job, rows, outputs)
    return rows


def _chunk_audio(audio: Mapping[str, ChunkAudio], chunk: TextChunk, digest: str) -> ChunkAudio:
    """Invariant: every chunk has audio (a checked cache entry or fresh speech) with frames."""
    found = audio.get(chunk.cache_key(digest))
    if found is None or found.frames <= 0:
        raise AudioError(f"chapter {chunk.chapter_index + 1}, chunk {chunk.seq}: no speech for {chunk.text[:60]!r}")
    return found


def _credit_chapter(chunk: TextChunk, title: str) -> Any:
    from voxflow.narrate.document import PreparedChapter

    return PreparedChapter(-1, title, (chunk,))


def _cover_beside(doc_uri: str) -> tuple[bytes | None, str | None]:
    """A cover image next to a .txt/.md: ``<stem>.jpg|png`` or ``cover.jpg|png``."""
    fs, path = resolve(doc_uri)
    stem = path.rsplit(".", 1)[0]
    folder = path.rsplit("/", 1)[0]
    candidates = [f"{stem}.jpg", f"{stem}.jpeg", f"{stem}.png", *(f"{folder}/{n}" for n in COVER_NAMES)]
    for candidate in candidates:
        with contextlib.suppress(OSError):
            if fs.exists(candidate):
                data = fs.cat_file(candidate)
                if data:
                    return data, "image/png" if candidate.endswith(".png") else "image/jpeg"
    return None, None


def _book_report(doc_uri: str, prepared: PreparedDocument, book: Audiobook, stats: SynthStats) -> dict[str, Any]:
    return {
        "source": doc_uri,
        "title": prepared.document.title,
        "author": prepared.document.author,
        "encoding": prepared.document.encoding,
        "chapters": [
            {"index": c.index, "title": c.title, "chars": c.n_chars, "chunks": len(c.chunks)} for c in prepared.chapters
        ],
        "preparation": prepared.report.as_dict(),
        "mastering": [f.mastering.as_dict() for f in book.files if f.mastering],
        "synthesis": {
            "chunks": stats.chunks,
            "synthesised": stats.synthesised,
            "cached": stats.cached,
            "cost_usd": round(stats.cost_usd, 6),
            "generation_ids": stats.generation_ids[:50],
            "warnings": stats.warnings,
        },
    }


def _done_rows(
    doc_uri: str,
    rel: str,
    job: _Job,
    prepared: PreparedDocument,
    book: Audiobook,
    stats: SynthStats,
    model: str,
    voice: str | None,
    run_id: str,
    started: datetime,
    outputs: list[str],
    digest: str,
) -> list[dict[str, Any]]:
    finished = _now()
    rows = []
    files = book.files or tuple(f for f in book.extras if f.fmt == "m4b")
    for chapter in prepared.chapters:
        spans = [(f, s) for f in files for s in f.chapters if s.index == chapter.index]
        first = spans[0] if spans else None
        keys = {c.cache_key(digest) for c in chapter.chunks}
        rows.append(
            {
                "document_id": job.document_id,
                **_name_columns(doc_uri, rel),
                "chapter_index": chapter.index,
                "chapter_title": chapter.title,
                "model": model,
                "voice": voice,
                "n_chars": chapter.n_chars,
                "duration_s": round(sum(s.end_ms - s.start_ms for _, s in spans) / 1000, 3),
                "cost_usd": round(sum(stats.cost_by_key.get(k, 0.0) for k in keys), 8),
                "output_uri": first[0].uri if first else None,
                "status": "done",
                "error_message": None,
                "error_kind": None,
                "run_id": run_id,
                "options_hash": job.digest,
                "finished_at": finished,
                "started_at": started,
                "book_title": prepared.document.title,
                "author": prepared.document.author,
                "start_s": round(first[1].start_ms / 1000, 3) if first else None,
                "n_chunks": len(chapter.chunks),
                "chunks_synthesised": sum(1 for k in keys if k in stats.cost_by_key),
                "mastering_passed": all(f.mastering.passed for f, _ in spans if f.mastering),
                "outputs": list(outputs),
            }
        )
    return rows


def _name_columns(doc_uri: str, rel: str) -> dict[str, Any]:
    """A row's names as valid text, and the rel path's exact bytes (see voxflow.fsnames)."""
    return {"source_uri": printable_name(doc_uri), "rel_path": printable_name(rel), "rel_path_bytes": raw_name(rel)}


def _failed_row(
    doc_uri: str,
    rel: str,
    model: str,
    voice: str | None,
    run_id: str,
    exc: BaseException,
    started: datetime,
    spent: SynthStats,
    prefix: str = "",
) -> dict[str, Any]:
    kind = exc.kind if isinstance(exc, VoxflowError) else type(exc).__name__
    reason = str(exc) or type(exc).__name__
    document_id = None
    with contextlib.suppress(VoxflowError, OSError):
        document_id = content_hash(doc_uri)
    return {
        "document_id": document_id,
        **_name_columns(doc_uri, rel),
        "chapter_index": None,
        "chapter_title": None,
        "model": model,
        "voice": voice,
        "n_chars": 0,
        "duration_s": 0.0,
        "cost_usd": round(spent.cost_usd, 8),
        "output_uri": None,
        "status": "failed",
        "error_kind": kind,
        "error_message": f"{printable_name(rel)}: {prefix}{reason}",
        "run_id": run_id,
        "options_hash": None,
        "finished_at": _now(),
        "started_at": started,
        "book_title": None,
        "author": None,
        "start_s": None,
        "n_chunks": 0,
        "chunks_synthesised": spent.synthesised,
        "mastering_passed": None,
        "outputs": [],
    }


def _save_state(out: OutputTree, job: _Job, rows: list[dict[str, Any]], outputs: list[str]) -> None:
    """The book's done-marker; outputs of the previous render that are gone from this one
    (a renamed chapter, a changed layout) are removed."""
    previous = _load_state(out, job.key) or {}
    stale = set(previous.get("outputs") or []) - set(outputs)
    for uri in stale:
        with contextlib.suppress(OSError, SourceError):
            fs, path = resolve(uri)
            if path.startswith(out.root.rstrip("/") + "/audiobooks/"):
                fs.rm(path)
    keep = [{k: v for k, v in row.items() if k not in ("started_at", "finished_at", "rel_path_bytes")} for row in rows]
    state = {"job": job.digest, "document_id": job.document_id, "rows": keep, "outputs": outputs}
    write_local_atomic(_state_path(out, job.key), json.dumps(state, default=str).encode())


# --------------------------------------------------------------------------- dry run


@dataclass(frozen=True, slots=True)
class ChapterPlan:
    index: int
    title: str
    n_chars: int
    n_words: int
    n_chunks: int
    minutes: float


@dataclass(frozen=True)
class DocumentPlan:
    """What ``--dry-run`` shows for one document, before anything is paid for."""

    uri: str
    rel_path: str
    title: str = ""
    author: str | None = None
    chapters: tuple[ChapterPlan, ...] = ()
    n_chars: int = 0
    n_words: int = 0
    n_chunks: int = 0
    minutes: float = 0.0
    costs: dict[str, float | None] = field(default_factory=dict)  # model → USD (None: unknown)
    preparation: str = ""
    error: str | None = None


def _price(pricing: Mapping[str, Any], key: str) -> float:
    try:
        return float(pricing.get(key) or 0.0)
    except (TypeError, ValueError):
        return 0.0


def estimate_cost(pricing: Mapping[str, Any] | None, n_chars: int, n_requests: int, seconds: float) -> float | None:
    """USD for speaking ``n_chars`` characters as ``seconds`` of audio in ``n_requests``
    requests, from a model's ``/models`` pricing (USD per token): input text tokens (4
    characters each), output audio tokens (10 a second, as voxflow's OpenRouter engine and
    the emulator assume), per-request fees. None when the pricing is unknown."""
    if pricing is None:
        return None
    from voxflow.engines.openrouter import AUDIO_TOKENS_PER_SECOND, CHARS_PER_TOKEN

    audio_key = "audio_output" if "audio_output" in pricing else "completion"
    return (
        math.ceil(n_chars / CHARS_PER_TOKEN) * _price(pricing, "prompt")
        + seconds * AUDIO_TOKENS_PER_SECOND * _price(pricing, audio_key)
        + n_requests * _price(pricing, "request")
    )


def plan_document(
    doc_uri: str,
    settings: Settings,
    *,
    options: NarrationOptions | None = None,
    rel_path: str | None = None,
    max_chars: int | None = None,
    pricing: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> DocumentPlan:
    """Chapters, characters, words, chunks, estimated minutes and cost per model (from
    ``pricing``: model → its ``/models`` pricing; local models cost nothing)."""
    options = options or NarrationOptions()
    rel = rel_path or doc_uri.rsplit("/", 1)[-1]
    model = settings.speech_model
    if max_chars is None:
        max_chars = _max_input_chars(settings, model)
    max_chars = min(max_chars, options.max_chunk_chars or max_chars)
    try:
        lexicon = Lexicon.load(lexicon_files(doc_uri, options))
        prepared = prepare_document(
            read_document(doc_uri),
            max_chars=max_chars,
            lexicon=lexicon,
            phonemes=is_local_model(model),
            latin_only=voice_is_latin(model),
        )
    except VoxflowError as exc:
        return DocumentPlan(doc_uri, rel, error=f"{exc.kind}: {exc}")
    p = options.pauses
    rate = LOCAL_CHARS_PER_SECOND if is_local_model(model) else SPOKEN_CHARS_PER_SECOND
    chapters = []
    for ch in prepared.chapters:
        pause_ms = (
            p.head_ms
            + p.tail_ms
            + p.heading_ms
            + sum(p.paragraph_ms if c.ends_paragraph else p.sentence_ms for c in ch.body[:-1])
        )
        minutes = (ch.n_chars / rate + pause_ms / 1000) / 60
        chapters.append(ChapterPlan(ch.index, ch.title, ch.n_chars, ch.n_words, len(ch.chunks), round(minutes, 2)))
    minutes = sum(c.minutes for c in chapters)
    n_chunks = sum(c.n_chunks for c in chapters)
    costs: dict[str, float | None] = {}
    if is_local_model(model):
        costs[model] = 0.0
    for name, price in (pricing or {}).items():
        seconds = prepared.n_chars / SPOKEN_CHARS_PER_SECOND
        cost = estimate_cost(price, prepared.n_chars, n_chunks, seconds)
        costs[name] = round(cost, 4) if cost is not None else None
    if model not in costs:
        costs[model] = None
    return DocumentPlan(
        doc_uri,
        rel,
        prepared.document.title,
        prepared.document.author,
        tuple(chapters),
        prepared.n_chars,
        prepared.n_words,
        n_chunks,
        round(minutes, 2),
        costs,
        prepared.report.summary(),
    )


def _max_input_chars(settings: Settings, model: str) -> int:
    if is_local_model(model):
        from voxflow.engines.local import LocalSynthesizer

        return LocalSynthesizer.max_input_chars
    try:
        from voxflow.engines.openrouter import tts_input_limit

        return tts_input_limit(model)
    except ImportError:
        return DEFAULT_MAX_CHARS


# --------------------------------------------------------------------------- a run


@dataclass
class NarrationPlan:
    source: str
    settings: Settings
    options: NarrationOptions
    found: int
    todo: list[DocumentRef]
    skipped: list[tuple[DocumentRef, list[dict[str, Any]]]]
    ignored: int
    keys: dict[str, str]
    model: str

    @property
    def has_work(self) -> bool:
        return bool(self.todo)


def plan_narration(source: str, settings: Settings, options: NarrationOptions | None = None) -> NarrationPlan:
    """Scan the corpus and skip unchanged, finished books (before any engine is built)."""
    options = options or NarrationOptions()
    options.assembly().validate()
    validate_narration(settings, options)
    docs, ignored = scan_documents(source, exclude=settings.out, follow_symlinks=settings.follow_symlinks)
    keys = book_keys(docs)
    out = OutputTree(settings.out)
    model = settings.speech_model
    max_chars = _max_input_chars(settings, model)
    todo: list[DocumentRef] = []
    skipped: list[tuple[DocumentRef, list[dict[str, Any]]]] = []
    hashes = HashCache(out.state_dir() / "document-hashes.json")
    for doc in docs:
        rows = None
        if not settings.force:
            try:
                document_id = hashes.hashed(Recording(doc.uri, doc.rel_path, doc.size_bytes, doc.mtime)).recording_id
                job = _job(doc.uri, _safe_key(keys[doc.rel_path]), settings, options, model, max_chars, document_id)
                rows = skipped_rows(out, job, "")
            except VoxflowError:
                rows = None  # the narration itself will report it
        if rows is None:
            todo.append(doc)
        else:
            skipped.append((doc, rows))
    with contextlib.suppress(VoxflowError):
        hashes.save()
    return NarrationPlan(source, settings, options, len(docs), todo, skipped, ignored, keys, model)


@dataclass(frozen=True)
class NarrationSpec:
    """What every task of a narration run gets besides its document, serialisable (no
    secrets, nothing open): a worker process builds its own engine and limits from it."""

    run_id: str
    settings: Settings
    options: NarrationOptions


@dataclass
class NarrationResources:
    """What the documents of one run share within one process (voice engine, limits)."""

    out: OutputTree
    synth: Synthesizer
    limiter: RequestLimiter
    budget: Budget
    aborted: RunAbort | None = None  # set by the first document that aborts: the rest do not start


_RESOURCES: PerProcess[NarrationResources] = PerProcess()


def resources_for(spec: NarrationSpec, synth: Synthesizer | None = None, *, prepare: bool = True) -> NarrationResources:
    """This process's resources for the run: built on first use (an OpenRouter engine checks
    key, model and voice first: an unknown model or voice aborts before any document)."""

    def build() -> NarrationResources:
        settings = spec.settings
        engine = synth or get_synthesizer(settings)
        if prepare:
            asyncio.run(_prepared(engine))
        remote = not is_local_model(settings.speech_model)
        return NarrationResources(
            out=OutputTree(settings.out),
            synth=engine,
            limiter=request_limiter(settings.concurrency, spec.run_id, remote=remote),
            budget=Budget(settings.budget_usd),
        )

    return _RESOURCES.get(spec.run_id, build)


@dataclass
class NarrationRun:
    """What the planning process keeps for a run: the plan, the catalog writer, the rows."""

    spec: NarrationSpec
    plan: NarrationPlan
    out: OutputTree
    catalog: CatalogWriter
    started_at: float = field(default_factory=time.time)
    aborted: RunAbort | None = None
    results: list[list[dict[str, Any]]] = field(default_factory=list)  # rows per narrated document

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def model(self) -> str:
        return self.plan.model


def open_narration(plan: NarrationPlan, run_id: str | None = None, synth: Synthesizer | None = None) -> NarrationRun:
    """Start a run: this process builds its own resources now when there is work (a bad key,
    model or voice stops the run before any task); other processes build theirs from the spec."""
    spec = NarrationSpec(run_id or new_run_id(), plan.settings, plan.options)
    out = OutputTree(plan.settings.out)
    scratch.sweep(out)  # what runs killed earlier left behind
    if plan.has_work or synth is not None:
        resources_for(spec, synth, prepare=synth is None)
    return NarrationRun(spec=spec, plan=plan, out=out, catalog=CatalogWriter(out, spec.run_id, writer="n0"))


async def _prepared(synth: Synthesizer) -> None:
    try:
        await synth.prepare()
    finally:
        with contextlib.suppress(Exception):
            await synth.aclose()


def narrate(doc: DocumentRef, spec: NarrationSpec, book_key: str | None = None) -> list[dict[str, Any]]:
    """Narrate one planned document wherever the task runs; its rows (the planning process
    writes them to the catalog). Raises RunAbort, which stops the run."""
    res = resources_for(spec)
    if res.aborted is not None:
        return [_run_failure_row(doc, spec, res.synth.model, res.aborted, "not started: ")]
    try:
        return narrate_document(
            doc.uri,
            spec.settings,
            res.out,
            res.synth,
            res.limiter,
            res.budget,
            spec.run_id,
            rel_path=doc.rel_path,
            book_key=book_key,
            options=spec.options,
        )
    except RunAbort as exc:
        res.aborted = res.aborted or exc
        raise


def record_rows(run: NarrationRun, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """In the planning process: a document's rows into the catalog and the run's results."""
    run.catalog.add_rows("narrations", rows)
    run.results.append(rows)
    return rows


def record_abort(run: NarrationRun, doc: DocumentRef, exc: RunAbort) -> None:
    """In the planning process: the document whose task aborted the run gets its row."""
    run.aborted = run.aborted or exc
    record_rows(run, [_run_failure_row(doc, run.spec, run.model, exc, "aborted: ")])


def _run_failure_row(
    doc: DocumentRef, spec: NarrationSpec, model: str, exc: BaseException, prefix: str
) -> dict[str, Any]:
    """The row of a document the run's abort stopped (before or while narrating it)."""
    row = _failed_row(
        doc.uri, doc.rel_path, model, spec.settings.voice, spec.run_id, exc, _now(), SynthStats(), prefix=prefix
    )
    return {**row, "worker": where_am_i()}


@dataclass
class NarrationSummary:
    run_id: str
    documents: int
    done: int
    failed: int
    skipped: int
    not_started: int
    chapters: int
    audio_s: float
    cost_usd: float
    wall_s: float
    aborted: str | None
    failures: list[dict[str, Any]]
    books: list[dict[str, Any]]
    manifest: str
    exit_code: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def finish_narration(run: NarrationRun, results: Sequence[Sequence[dict[str, Any]]] | None = None) -> NarrationSummary:
    """Flush the catalog, write the run manifest (with each file's mastering report), and
    say how the run went (exit code per design §3). ``results`` defaults to every document
    :func:`narrate` handled in this run (an aborted one included)."""
    plan = run.plan
    results = list(run.results if results is None else results)
    handled = {row["rel_path"] for rows in results for row in rows}
    interrupted = interrupts.requested()
    for doc in plan.todo:  # a document whose task died before it returned rows
        if printable_name(doc.rel_path) not in handled and not interrupted:
            reason = run.aborted or RuntimeError("the task ended without a result (see the flow's logs)")
            prefix = "not started: " if run.aborted else ""
            rows = [_failed_row(doc.uri, doc.rel_path, run.model, plan.settings.voice, run.run_id, reason,
                                _now(), SynthStats(), prefix=prefix)]  # fmt: skip
            run.catalog.add_rows("narrations", rows)
            results.append(rows)
    for doc, rows in plan.skipped:
        for row in rows:
            row.update(run_id=run.run_id, **_name_columns(doc.uri, doc.rel_path))
        run.catalog.add_rows("narrations", rows)
    run.catalog.flush()
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for rows in [*results, *(rows for _d, rows in plan.skipped)]:
        for row in rows:
            by_doc.setdefault(row["rel_path"], []).append(row)
    done_paths = {p for p, rows in by_doc.items() if rows and rows[0]["status"] == "done"}
    failed = [rows[0] for rows in by_doc.values() if rows and rows[0]["status"] == "failed"]
    not_started = [r for r in failed if ": not started: " in (r["error_message"] or "")]
    undone = [printable_name(d.rel_path) for d in plan.todo if printable_name(d.rel_path) not in done_paths]
    books = []
    for rel, rows in sorted(by_doc.items()):
        head = rows[0]
        books.append(
            {
                "file": rel,
                "status": head["status"],
                "title": head.get("book_title"),
                "chapters": len(rows) if head["status"] != "failed" else 0,
                "duration_s": round(sum(r["duration_s"] or 0 for r in rows), 3),
                "cost_usd": round(sum(r["cost_usd"] or 0 for r in rows), 6),
                "mastering_passed": head.get("mastering_passed"),
                "outputs": head.get("outputs") or [],
                "error": head.get("error_message"),
            }
        )
    mastering = _mastering_reports(run.out, books)
    aborted = f"{run.aborted.kind}: {run.aborted}" if run.aborted else None
    exit_code = interrupts.INTERRUPTED_EXIT if interrupted else 3 if run.aborted else (1 if failed else 0)
    new_rows = [r for rows in results for r in rows]
    manifest = {
        "run_id": run.run_id,
        "kind": "narrate",
        "source": plan.source,
        "settings": plan.settings.public_dict(),
        "narration": plan.options.as_dict(),
        "model": run.model,
        "started_at": run.started_at,
        "finished_at": time.time(),
        "counts": {
            "found": plan.found,
            "done": len(done_paths),
            "skipped": len(plan.skipped),
            "failed": len(failed),
            "ignored": plan.ignored,
        },
        "audio_s": round(sum(r["duration_s"] or 0 for r in new_rows if r["status"] == "done"), 3),
        "cost_usd": round(sum(r["cost_usd"] or 0 for r in new_rows), 6),
        "aborted": aborted,
        "interrupted": interrupted,
        "left_undone": undone if run.aborted or interrupted else [],
        "errors": [{"file": r["rel_path"], "kind": r["error_kind"], "message": r["error_message"]} for r in failed],
        "books": books,
        "mastering": mastering,
        "catalog_parts": run.catalog.written,
    }
    manifest_uri = run.out.write_text(f"runs/{run.run_id}.json", json.dumps(manifest, indent=2, default=str))
    _RESOURCES.drop(run.run_id)
    return NarrationSummary(
        run_id=run.run_id,
        documents=plan.found,
        done=len(done_paths),
        failed=len(failed),
        skipped=len(plan.skipped),
        not_started=len(not_started),
        chapters=sum(1 for r in new_rows if r["status"] == "done"),
        audio_s=manifest["audio_s"],
        cost_usd=manifest["cost_usd"],
        wall_s=round(time.time() - run.started_at, 3),
        aborted=aborted,
        failures=manifest["errors"],
        books=books,
        manifest=manifest_uri,
        exit_code=exit_code,
    )


def _mastering_reports(out: OutputTree, books: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each book's per-file mastering report, from its report.json."""
    reports = []
    for book in books:
        for uri in book["outputs"]:
            if uri.endswith(".report.json"):
                with contextlib.suppress(OSError, ValueError, SourceError):
                    fs, path = resolve(uri)
                    data = json.loads(fs.cat_file(path))
                    reports.append({"file": book["file"], "files": data.get("mastering", [])})
    return reports


def run_inline(plan: NarrationPlan, run_id: str | None = None, synth: Synthesizer | None = None) -> NarrationSummary:
    """Run a plan without Prefect, one document after another (no-op runs, tests)."""
    run = open_narration(plan, run_id, synth)
    for doc in plan.todo:
        try:
            record_rows(run, narrate(doc, run.spec, plan.keys.get(doc.rel_path)))
        except RunAbort as exc:  # the rest come back as "not started" rows
            record_abort(run, doc, exc)
    return finish_narration(run)


class _NullSynth(Synthesizer):
    """The engine of a run with nothing to synthesise: no model loaded, no key checked."""

    max_input_chars = DEFAULT_MAX_CHARS

    def __init__(self, model: str) -> None:
        self.model = model

    async def synthesise(self, text: str, options: SynthesisOptions) -> SpeechAudio:
        raise AudioError("no engine in a run without work")


def document_workers(settings: Settings) -> int:
    """Documents in flight at once: the CPU-bound local voice gains nothing from many."""
    if settings.workers:
        return settings.workers
    return 2 if is_local_model(settings.speech_model) else min(settings.concurrency, 16)


# --------------------------------------------------------------------------- CLI entry


def run_narrate(
    source: str,
    settings: Settings,
    *,
    dry_run: bool = False,
    per_chapter: bool = True,
    fmt: str = "mp3",
    instructions: str | None = None,
    speed: float | None = None,
    options: NarrationOptions | None = None,
    run_flow: Callable[[str, Settings, NarrationOptions], dict[str, Any]] | None = None,
    echo: Callable[[str], None] | None = None,
    on_summary: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """``voxflow narrate``: plan, run (through the Prefect flow only when there is work),
    print a summary; returns the exit code of design §3."""
    from rich.console import Console

    console = Console(highlight=False)
    say = echo or console.print
    try:
        options = options or NarrationOptions(
            per_chapter=per_chapter,
            formats=parse_formats(fmt),
            instructions=instructions,
            speed=speed,
        )
        if dry_run:
            return _dry_run(source, settings, options, console, say)
        started = time.monotonic()
        plan = plan_narration(source, settings, options)
        if plan.found == 0:
            say(f"no documents (.txt, .md, .epub) found in {source} ({plan.ignored} other files)")
            return 0
        say(
            f"found {plan.found} documents: {len(plan.todo)} to narrate, "
            f"{len(plan.skipped)} unchanged (skipped); model {plan.model}"
        )
        if plan.has_work and run_flow:  # the CLI's Prefect flow; a no-op rerun never pays its start-up
            unsubscribe = progress.subscribe(print_documents())
            try:
                summary = run_flow(source, settings, options)
            finally:
                unsubscribe()
        else:
            summary = run_inline(plan).as_dict()
    except RunAbort as exc:
        say(f"aborted: {exc.kind}: {exc}")
        if on_summary:
            on_summary({"aborted": f"{exc.kind}: {exc}"})
        return 3
    except (ConfigError, SourceError) as exc:
        say(f"error: {exc}")
        return 2
    _print_summary(summary, console, time.monotonic() - started)
    if on_summary:  # e.g. the CLI's --notify
        on_summary(summary)
    return int(summary["exit_code"])


def print_documents() -> Callable[[str, dict[str, Any]], None]:
    from rich.console import Console

    console = Console(highlight=False)

    def listener(event: str, data: dict[str, Any]) -> None:
        if event == "narration.finished":
            rows = data.get("rows") or []
            head = rows[0] if rows else {}
            mark = {"done": "✓", "skipped": "·", "failed": "✗"}.get(head.get("status", ""), "?")
            detail = head.get("error_message") or f"{len(rows)} chapters"
            console.print(f"{mark} {data.get('document')}: {detail}")

    return listener


def _print_summary(summary: Mapping[str, Any], console: Any, wall_s: float) -> None:
    from rich.table import Table

    table = Table(title=f"narration run {summary['run_id']}", show_header=True)
    for column in ("document", "status", "chapters", "minutes", "ACX", "cost $"):
        table.add_column(column)
    for book in summary["books"]:
        acx = {True: "pass", False: "FAIL", None: "-"}[book.get("mastering_passed")]
        table.add_row(
            book["file"],
            book["status"],
            str(book["chapters"]),
            f"{book['duration_s'] / 60:.1f}",
            acx,
            f"{book['cost_usd']:.4f}",
        )
    console.print(table)
    console.print(
        f"{summary['done']} done, {summary['skipped']} skipped, {summary['failed']} failed; "
        f"{summary['audio_s'] / 60:.1f} min of audio, ${summary['cost_usd']:.4f}, "
        f"{wall_s:.1f} s; manifest {summary['manifest']}"
    )
    for failure in summary["failures"]:
        console.print(f"✗ {failure['kind']}: {failure['message']}")
    if summary.get("aborted"):
        console.print(f"aborted: {summary['aborted']}")


def _dry_run(
    source: str,
    settings: Settings,
    options: NarrationOptions,
    console: Any,
    say: Callable[[str], None],
) -> int:
    from rich.table import Table

    validate_narration(settings, options)
    docs, ignored = scan_documents(source, exclude=settings.out, follow_symlinks=settings.follow_symlinks)
    pricing = _speech_pricing(settings)
    model = settings.speech_model
    plans = [
        plan_document(d.uri, settings, options=options, rel_path=printable_name(d.rel_path), pricing=pricing)
        for d in docs
    ]
    table = Table(title=f"narration plan ({model})")
    for column in ("document", "chapters", "characters", "words", "chunks", "est. minutes", "est. cost $"):
        table.add_column(column)
    for p in plans:
        cost = p.costs.get(model)
        table.add_row(
            p.rel_path,
            "-" if p.error else str(len(p.chapters)),
            str(p.n_chars),
            str(p.n_words),
            str(p.n_chunks),
            f"{p.minutes:.1f}",
            "unknown" if cost is None else f"{cost:.4f}",
        )
    console.print(table)
    for p in plans:
        if p.error:
            say(f"✗ {p.rel_path}: {p.error}")
            continue
        say(f"{p.rel_path}: {p.title}" + (f" — {p.author}" if p.author else ""))
        for ch in p.chapters:
            say(f"   {ch.index + 1:>3}. {ch.title} ({ch.n_chars} chars, ≈ {ch.minutes:.1f} min)")
    totals: dict[str, float] = {}
    unknown: set[str] = set()
    for p in plans:
        for name, cost in p.costs.items():
            if cost is None:
                unknown.add(name)
            else:
                totals[name] = totals.get(name, 0.0) + cost
    say(
        f"{len(docs)} documents ({ignored} other files), "
        f"{sum(p.n_chars for p in plans)} characters, ≈ {sum(p.minutes for p in plans):.1f} min"
    )
    for name in sorted(totals, key=lambda n: (n != model, totals[n])):
        say(f"  {name}: ≈ ${totals[name]:.4f}" + ("   ← this run" if name == model else ""))
    if model in unknown:
        say(f"  {model}: cost unknown (no pricing: set OPENROUTER_API_KEY to fetch it)")
    cap = settings.budget_usd
    if cap is not None and totals.get(model, 0.0) > cap:
        say(f"  the estimate exceeds --budget-usd {cap:g}: a run stops starting work at the cap")
    return 0


def _speech_pricing(settings: Settings) -> dict[str, Mapping[str, Any] | None]:
    """model → pricing from ``GET /models?output_modalities=speech`` (only with a key: a dry
    run offline must not wait on the network)."""
    if not settings.openrouter.has_key:
        return {}
    try:
        from voxflow.engines.openrouter import list_models

        models = asyncio.run(list_models(settings, "speech"))
    except (VoxflowError, ImportError):
        return {}
    return {m["id"]: m.get("pricing") if isinstance(m.get("pricing"), dict) else None for m in models}


__all__ = [
    "ChunkCache",
    "DocumentPlan",
    "DocumentRef",
    "NarrationOptions",
    "NarrationPlan",
    "NarrationRun",
    "NarrationSummary",
    "book_keys",
    "estimate_cost",
    "finish_narration",
    "narrate",
    "narrate_document",
    "open_narration",
    "parse_formats",
    "plan_document",
    "plan_narration",
    "run_inline",
    "run_narrate",
    "scan_documents",
    "synthesise_chunks",
    "validate_narration",
]
