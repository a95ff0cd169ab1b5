"""Planning a narration run: the cheap skip check per document (content hash, options,
lexicon, outputs still there) and the dry-run estimate of chapters, requests and cost."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from voxflow.engines.base import is_local as is_local_model
from voxflow.errors import VoxflowError
from voxflow.io.hashes import HashCache
from voxflow.io.outputs import OutputTree
from voxflow.models import Recording
from voxflow.narrate.corpus import DocumentRef, book_keys, lexicon_files, safe_key, scan_documents
from voxflow.narrate.job import make_job, skipped_rows
from voxflow.narrate.lexicon import Lexicon
from voxflow.narrate.options import NarrationOptions, validate_narration, voice_is_latin
from voxflow.narrate.prepare import DEFAULT_MAX_CHARS, prepare_document
from voxflow.narrate.read import read_document
from voxflow.settings import Settings

# Spoken characters a second, for estimates: Piper's joe voice measured ≈ 18 (chunks as
# synthesised, before voxflow's pauses); API voices assumed 15 (as the OpenRouter engine does).
LOCAL_CHARS_PER_SECOND = 18.0


SPOKEN_CHARS_PER_SECOND = 15.0


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
                job = make_job(doc.uri, safe_key(keys[doc.rel_path]), settings, options, model, max_chars, document_id)
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
