"""Planning a transcription run: scan, hash, and sort recordings into todo / skip / restore /
failed before any engine is touched (identical files transcribed once; shards; deletions)."""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field, replace

from voxflow import media
from voxflow.cluster import where_am_i
from voxflow.engines.base import TranscribeOptions
from voxflow.errors import (
    AudioError,
    SourceError,
    VoxflowError,
)
from voxflow.io.catalog import CatalogIndex, DoneRecord
from voxflow.io.hashes import HashCache
from voxflow.io.outputs import OutputTree
from voxflow.io.sources import Listing, ScanResult, Skipped, find_paths, scan
from voxflow.io.storage import NAME_MAX, full_uri, is_local, resolve, under
from voxflow.known_failures import KnownFailure, KnownFailures
from voxflow.models import (
    Recording,
    RecordingResult,
)
from voxflow.ownership import OutputLedger
from voxflow.settings import Settings
from voxflow.transcribe.minutes import minutes_target
from voxflow.transcribe.outputs import left_alone_note, sidecar_targets
from voxflow.transcribe.translations import targets_for


def transcribe_options(settings: Settings) -> TranscribeOptions:
    return TranscribeOptions(
        model=settings.transcription_model,
        language=settings.language,
        temperature=settings.temperature,
        diarize=settings.diarize,
        keyterms=settings.keyterms,
        max_chunk_s=settings.max_chunk_s,
        silence_db=settings.silence_db,
        min_silence_s=settings.min_silence_s,
        audio_language=settings.audio_language,
    )


@dataclass
class RunPlan:
    """What a run will do, decided before any engine is touched."""

    source: str
    settings: Settings
    options_hash: str
    todo: list[Recording] = field(default_factory=list)
    skipped: list[Recording] = field(default_factory=list)
    restore: list[tuple[Recording, DoneRecord]] = field(default_factory=list)
    twins: list[Recording] = field(default_factory=list)  # same content as a todo recording: written from its result
    failed: list[RecordingResult] = field(default_factory=list)
    unsettled: list[Recording] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # done in the catalog, gone from the source
    passed_over: tuple[Skipped, ...] = ()  # special files, symlinks out of the source: never opened
    known_failures: list[KnownFailure] = field(default_factory=list)  # failed for good, unchanged: not retried
    stems: dict[str, str] = field(default_factory=dict)
    ledger: OutputLedger = field(default_factory=OutputLedger)  # which output files voxflow wrote
    left_alone: list[str] = field(default_factory=list)  # sidecars of skipped recordings not ours
    subtitled: list[tuple[Recording, str]] = field(default_factory=list)  # has the wanted subtitles already
    # done, but --translate-to languages (chat) are missing: translated from the catalog's transcript
    translate: list[tuple[Recording, DoneRecord, tuple[str, ...]]] = field(default_factory=list)
    # done, but --minutes are missing: made from the catalog's transcript
    minutes: list[tuple[Recording, DoneRecord]] = field(default_factory=list)
    ignored: int = 0
    found: int = 0

    @property
    def has_work(self) -> bool:
        return bool(self.todo)


def plan_run(source: str, settings: Settings) -> RunPlan:
    """Scan ``source`` and sort recordings into todo / skip / restore / failed; files still
    being copied wait (``unsettled``); done recordings gone from the source are ``deleted``."""
    out = OutputTree(settings.out)
    scanned = scan(
        source, exclude=settings.out, settle_seconds=settings.settle_seconds, follow_symlinks=settings.follow_symlinks
    )
    options = transcribe_options(settings)
    plan = RunPlan(source, settings, options.digest(), ignored=scanned.ignored)
    plan.found = len(scanned.recordings) + len(scanned.unsettled)
    plan.unsettled = list(scanned.unsettled)
    plan.passed_over = scanned.skipped
    plan.stems = sidecar_stems(scanned.recordings + scanned.unsettled)
    cache = HashCache.in_tree(out, source, writer_name(settings), media=True)
    index = CatalogIndex.load(out)
    plan.ledger = OutputLedger.load(out, index, writer_name(settings))
    existing = _existing_outputs(settings, out, source, scanned)
    present: set[str] = set()
    known = KnownFailures() if settings.force or settings.retry_failed else KnownFailures.load(out, plan.options_hash)
    cache.prefetch(scanned.recordings, scanned.versions)
    for rec in scanned.recordings:
        try:
            rec = replace(cache.hashed(rec, scanned.versions.get(rec.uri)), sidecar_stem=plan.stems[rec.rel_path])
        except (SourceError, AudioError) as exc:  # unreadable, or not audio/video (never read through)
            if _mine_id(hashlib.sha256(os.fsencode(rec.uri)).hexdigest(), settings.shard):
                _failed_unless_known(plan, rec, exc, known)
            continue
        present.add(rec.recording_id)
        if not _mine(rec, settings.shard):
            continue
        done = None if settings.force else index.get(rec.recording_id, plan.options_hash)
        if done is None and (subtitles := _subtitled(rec, plan, scanned.listing)):
            plan.subtitled.append((rec, subtitles))
        elif done is None:
            _todo_unless_known(plan, rec, known)
        elif not _translation_settled(rec, done, plan, existing):
            plan.todo.append(rec)  # a translation is made from the audio: the catalog cannot restore it
        elif _sidecars_settled(rec, done.language, plan, existing):
            plan.skipped.append(rec)
            _translate_if_missing(plan, rec, done, index, existing)
            _minutes_if_missing(plan, rec, done, index, existing)
        else:
            _restore_or_redo(plan, rec, index.restorable(rec.recording_id, plan.options_hash))
            if plan.restore and plan.restore[-1][0] is rec:
                _translate_if_missing(plan, rec, plan.restore[-1][1], index, existing)
            if plan.restore and plan.restore[-1][0] is rec:
                _minutes_if_missing(plan, rec, plan.restore[-1][1], index, existing)
    cache.save()
    plan.todo, plan.twins = _split_twins(plan.todo)
    plan.deleted = _deleted(source, scanned, present, index, settings.shard)
    return plan


def _todo_unless_known(plan: RunPlan, rec: Recording, known: KnownFailures) -> None:
    """Transcribe ``rec``, unless it failed for good with the same content and options."""
    if failure := known.hashed(rec):
        plan.known_failures.append(failure)
    else:
        plan.todo.append(rec)


def _failed_unless_known(plan: RunPlan, rec: Recording, exc: BaseException, known: KnownFailures) -> None:
    """A file refused before hashing fails the run, unless it failed the same way, unchanged, before."""
    if failure := known.refused(rec, exc):
        plan.known_failures.append(failure)
    else:
        plan.failed.append(failed_result(rec, exc, plan.options_hash, plan.settings.transcription_model))


def _restore_or_redo(plan: RunPlan, rec: Recording, done: DoneRecord | None) -> None:
    """Restore from the catalog when it holds the whole transcript, else transcribe again."""
    if done is None:
        plan.todo.append(rec)
    else:
        plan.restore.append((rec, done))


def _split_twins(todo: list[Recording]) -> tuple[list[Recording], list[Recording]]:
    """(recordings to transcribe, the rest): files with the same content as an earlier one
    in ``todo`` are transcribed once; each twin is then written from that one result."""
    first: dict[str, Recording] = {}
    twins = []
    for rec in todo:
        if rec.recording_id in first:
            twins.append(rec)
        else:
            first[rec.recording_id] = rec
    return list(first.values()), twins


def _mine(rec: Recording, shard: str | None) -> bool:
    """True when this worker's shard ("i/n") owns the recording (by content hash)."""
    return _mine_id(rec.recording_id, shard)


def _mine_id(recording_id: str, shard: str | None) -> bool:
    if not shard:
        return True
    index, count = (int(x) for x in shard.split("/"))
    return int(recording_id[:12], 16) % count == index


def _deleted(source: str, scanned: ScanResult, present: set[str], index: CatalogIndex, shard: str | None) -> list[str]:
    """Source URIs of recordings the catalog has done under ``source`` that are gone from it
    (neither the file nor its content is there any more). Their rows are kept."""
    fs, root = resolve(source)
    root_uri = full_uri(fs, root.rstrip("/"))
    here = {r.uri for r in (*scanned.recordings, *scanned.unsettled)}
    gone = {
        done.source_uri
        for done in index.done.values()
        if done.source_uri not in here
        and done.recording_id not in present
        and under(done.source_uri, root_uri)
        and _mine_id(done.recording_id, shard)
    }
    return sorted(gone)


def sidecar_stems(recordings: tuple[Recording, ...]) -> dict[str, str]:
    """Sidecar stem per rel_path: the file stem, or the full name when two files share it;
    cut short (with a tag of the full name) where a sidecar name would pass NAME_MAX."""
    counts = Counter((r.rel_dir, r.stem) for r in recordings)
    return {
        r.rel_path: _fitting_stem(r.stem if counts[(r.rel_dir, r.stem)] == 1 else r.rel_path.rsplit("/", 1)[-1])
        for r in recordings
    }


def _fitting_stem(stem: str) -> str:
    """``stem``, or its first bytes + ``~`` + 8 hex of its hash when ``stem.und.json`` would be
    longer than NAME_MAX bytes (a file system refuses such a name)."""
    raw = os.fsencode(stem)
    room = NAME_MAX - len(".und.json")
    if len(raw) <= room:
        return stem
    tag = "~" + hashlib.sha256(raw).hexdigest()[:8]
    return os.fsdecode(raw[: room - len(tag)]) + tag


SUBTITLE_EXTENSIONS = ("srt", "vtt")


def _subtitled(rec: Recording, plan: RunPlan, listing: Listing | None) -> str | None:
    """A subtitle file beside ``rec``, in a language the run would write (``--language``,
    ``--translate-to``), that voxflow did not write: ``<stem>.<code>.srt|vtt`` with a two- or
    three-letter code (``movie.en.srt``, ``movie.eng.vtt``). Its path, or None (also with
    ``--force``, or when the language is left to detection)."""
    settings = plan.settings
    wanted = {code for code in (settings.language, *settings.translate_to) if code}
    if settings.force or not wanted or listing is None:
        return None
    folder = resolve(rec.uri)[1].rsplit("/", 1)[0]
    codes = _codes_of(wanted)
    for code in sorted(codes):
        for ext in SUBTITLE_EXTENSIONS:
            path = f"{folder}/{rec.stem}.{code}.{ext}"
            if path in listing.paths and plan.ledger.key(full_uri(listing.fs, path)) not in plan.ledger.claims:
                return path
    return _embedded_subtitles(rec, codes) if is_local(listing.fs) else None


def _embedded_subtitles(rec: Recording, codes: set[str]) -> str | None:
    """``<name>: subtitle stream N (<tag>)`` for the first subtitle stream inside ``rec`` tagged
    with one of ``codes`` (local files only: a bucket's videos would be read to find out)."""
    for number, tag in enumerate(media.subtitle_languages(resolve(rec.uri)[1])):
        if tag and tag.lower() in codes:
            return f"{rec.rel_path}: subtitle stream {number} ({tag})"
    return None


def _codes_of(languages: set[str]) -> set[str]:
    """ISO-639-1 codes and their three-letter forms (both ISO-639-2 B and T: ``fr``, ``fra``, ``fre``)."""
    import langcodes

    codes = set(languages)
    for code in languages:
        language = langcodes.Language.get(code)
        codes |= {language.to_alpha3(variant="T"), language.to_alpha3(variant="B")}
    return codes


def _translation_settled(rec: Recording, done: DoneRecord, plan: RunPlan, existing: set[str]) -> bool:
    """True unless ``--translate-to`` wants sidecars in another language than the recording's
    and they are missing (a run without the flag, or files deleted since)."""
    target = "en" if plan.settings.offline_translation else None
    if not target or done.language in (target, "und") or not (done.n_segments or done.text):
        return True
    return _sidecars_settled(rec, target, plan, existing)


def _translate_if_missing(
    plan: RunPlan, rec: Recording, done: DoneRecord, index: CatalogIndex, existing: set[str]
) -> None:
    """Chat translations (--translate-to) whose sidecars are missing are made from the catalog's
    transcript; without a whole transcript there, the recording is transcribed again."""
    if not (done.n_segments or done.text):
        return
    targets = targets_for(plan.settings, done.language)
    missing = tuple(t for t in targets if not _sidecars_settled(rec, t, plan, existing))
    if not missing:
        return
    whole = index.restorable(rec.recording_id, plan.options_hash)
    if whole is not None:
        plan.translate.append((rec, whole, missing))
        return
    if rec in plan.skipped:
        plan.skipped.remove(rec)
    plan.restore = [(r, d) for r, d in plan.restore if r is not rec]
    plan.todo.append(rec)


def _minutes_if_missing(
    plan: RunPlan, rec: Recording, done: DoneRecord, index: CatalogIndex, existing: set[str]
) -> None:
    """--minutes whose file is missing are made from the catalog's transcript (a recording
    about to be transcribed again gets them from its task; without a whole transcript in the
    catalog, it is transcribed again)."""
    if not plan.settings.minutes or rec in plan.todo or not (done.n_segments or done.text):
        return
    state = minutes_target(rec, plan.ledger, plan.settings, existing).state
    if state == "mine" or (state == "foreign" and not plan.settings.overwrite):
        return  # there (ours, or a file voxflow leaves alone)
    whole = index.restorable(rec.recording_id, plan.options_hash)
    if whole is not None:
        plan.minutes.append((rec, whole))
        return
    if rec in plan.skipped:
        plan.skipped.remove(rec)
    plan.restore = [(r, d) for r, d in plan.restore if r is not rec]
    plan.translate = [t for t in plan.translate if t[0] is not rec]
    plan.todo.append(rec)


def _sidecars_settled(rec: Recording, language: str, plan: RunPlan, existing: set[str]) -> bool:
    """True when every sidecar is there as voxflow wrote it, or is a file voxflow leaves alone."""
    settings = plan.settings
    targets = sidecar_targets(rec, language, plan.ledger, settings, existing)
    foreign = [t for t in targets if t.state == "foreign"]
    if any(t.state == "free" for t in targets) or (foreign and settings.overwrite):
        return False
    plan.left_alone.extend(left_alone_note(t) for t in foreign)
    return True


def _existing_outputs(settings: Settings, out: OutputTree, source: str, scanned: ScanResult | None = None) -> set[str]:
    """Every file under the output tree (or the source, beside-source), listed once: taken
    from the scan's own listing when that covers the folder (no second LIST on a bucket)."""
    fs, root = resolve(source) if settings.beside_source else (out.fs, out.root)
    listing = scanned.listing if scanned else None
    if listing is not None and settings.beside_source and listing.single_file:
        root = listing.root  # one file: its sidecars are in its folder
    listed = listing.paths_under(fs, root) if listing is not None else None
    return listed if listed is not None else find_paths(fs, root)


def writer_name(settings: Settings) -> str:
    return "s" + settings.shard.replace("/", "of") if settings.shard else "w0"


def failed_result(
    rec: Recording,
    exc: BaseException,
    options_hash: str,
    model: str,
    started: float = 0.0,
    prefix: str = "",
) -> RecordingResult:
    kind = exc.kind if isinstance(exc, VoxflowError) else type(exc).__name__
    return RecordingResult(
        recording=rec,
        status="failed",
        model=model,
        options_hash=options_hash,
        error_kind=kind,
        error_message=f"{rec.rel_path}: {prefix}{exc}",
        started_at=started or time.time(),
        finished_at=time.time(),
        worker=where_am_i(),
    )
