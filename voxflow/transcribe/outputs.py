"""Where a recording's sidecars go and writing them: stems that never collide, the ownership
ledger's say on each path (a file voxflow did not write is left alone), atomic writes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from voxflow.errors import RunAbort
from voxflow.fsnames import printable_name
from voxflow.io.outputs import OutputTree
from voxflow.models import (
    Recording,
    Transcript,
    language_code,
)
from voxflow.ownership import Claim, OutputLedger, PathState, sha256_of
from voxflow.settings import Settings
from voxflow.subtitles import SidecarDoc, render_sidecars, shape_cues, sidecar_name


def _sidecar_tree(rec: Recording, settings: Settings) -> tuple[OutputTree, str]:
    """(tree, folder within it) where ``rec``'s sidecars go."""
    if settings.beside_source:
        return OutputTree.cached(rec.uri.rsplit("/", 1)[0]), ""
    return OutputTree.cached(settings.out), rec.rel_dir


@dataclass(frozen=True, slots=True)
class SidecarTarget:
    """Where one sidecar of a recording goes, and what is there now."""

    fmt: str
    tree: OutputTree
    rel: str  # within ``tree``
    shown: str  # relative to the source tree, for messages
    state: PathState

    @property
    def uri(self) -> str:
        return self.tree.uri(self.rel)


def sidecar_targets(
    rec: Recording, language: str, ledger: OutputLedger, settings: Settings, existing: set[str] | None = None
) -> list[SidecarTarget]:
    """The recording's sidecars under the first stem whose paths no other recording owns:
    ``talk``, then ``talk.mp3``, then ``talk.mp3.<id>`` (deterministic)."""
    tree, folder = _sidecar_tree(rec, settings)
    name = rec.rel_path.rsplit("/", 1)[-1]
    stems = dict.fromkeys((rec.sidecar_stem or rec.stem, name, f"{name}.{rec.recording_id[:12]}"))
    for stem in stems:
        targets = [
            _target(rec, tree, folder, sidecar_name(stem, language, fmt), fmt, ledger, existing)
            for fmt in settings.formats
        ]
        if not any(t.state == "taken" for t in targets):
            break
    return targets


def _target(
    rec: Recording, tree: OutputTree, folder: str, name: str, fmt: str, ledger: OutputLedger, existing: set[str] | None
) -> SidecarTarget:
    rel = f"{folder}/{name}" if folder else name
    shown = f"{rec.rel_dir}/{name}" if rec.rel_dir else name
    path = tree.path(rel)

    def read() -> bytes | None:
        if existing is not None and path not in existing:
            return None
        try:
            return bytes(tree.fs.cat_file(path))
        except FileNotFoundError:
            return None

    return SidecarTarget(fmt, tree, rel, shown, ledger.state(tree.uri(rel), rec.recording_id, rec.uri, read))


def left_alone_note(target: SidecarTarget) -> str:
    return f"left alone: {target.shown} (not written by voxflow; --overwrite to replace)"


@dataclass
class SidecarWrites:
    written: list[str]  # URIs
    claims: list[Claim]  # ledger entries for ``written``
    left_alone: list[str]  # notes on files voxflow did not write and did not replace


@dataclass(frozen=True)
class ChatOutcome:
    """What chat work on one recording gave (its translations, or its minutes): rows for its
    table, the sidecars written, warnings (what failed or was dropped), the cost of every
    answer, and a RunAbort met (key, credit or budget: the run stops starting work)."""

    rows: tuple[dict[str, Any], ...] = ()
    writes: tuple[SidecarWrites, ...] = ()
    warnings: tuple[str, ...] = ()
    cost_usd: float = 0.0
    aborted: RunAbort | None = None


def write_sidecars(
    rec: Recording,
    transcript: Transcript,
    duration_ms: int,
    ledger: OutputLedger,
    settings: Settings,
    *,
    run_id: str = "",
    writer: str = "w0",
) -> SidecarWrites:
    """Write the subtitle/transcript sidecars of one recording, claiming each in the ledger
    first; a file voxflow did not write is left alone (``--overwrite`` replaces it)."""
    language = language_code(transcript.language)
    cues = shape_cues(transcript.segments, duration_ms)
    doc = SidecarDoc(
        text=transcript.text,
        language=language,
        model=settings.transcription_model,
        duration_ms=duration_ms,
        segments=transcript.segments,
        cues=tuple(cues),
        extra={"source": printable_name(rec.rel_path), "recording_id": rec.recording_id},
    )
    return write_doc(rec, doc, ledger, settings, run_id=run_id, writer=writer)


def write_doc(
    rec: Recording, doc: SidecarDoc, ledger: OutputLedger, settings: Settings, *, run_id: str = "", writer: str = "w0"
) -> SidecarWrites:
    """Write ``doc`` as the recording's sidecars in ``doc.language`` (see write_sidecars)."""
    rendered = render_sidecars(doc, settings.formats)
    targets = sidecar_targets(rec, doc.language, ledger, settings)
    writable = [t for t in targets if t.state != "foreign" or settings.overwrite]
    now = time.time()
    claims = [
        Claim(ledger.key(t.uri), rec.recording_id, rec.uri, sha256_of(rendered[t.fmt].encode("utf-8")), run_id, now)
        for t in writable
    ]
    ledger.journal(claims, writer, run_id)
    written = [t.tree.write_text(t.rel, rendered[t.fmt]) for t in writable]
    left_alone = [left_alone_note(t) for t in targets if t not in writable]
    return SidecarWrites(written, claims, left_alone)


def extra_target(
    rec: Recording, suffix: str, ledger: OutputLedger, settings: Settings, existing: set[str] | None = None
) -> SidecarTarget:
    """Where a further sidecar of the recording goes, ``<stem>.<suffix>`` (``talk.minutes.md``),
    under the first stem no other recording owns, as sidecar_targets chooses."""
    tree, folder = _sidecar_tree(rec, settings)
    name = rec.rel_path.rsplit("/", 1)[-1]
    stems = dict.fromkeys((rec.sidecar_stem or rec.stem, name, f"{name}.{rec.recording_id[:12]}"))
    for stem in stems:
        target = _target(rec, tree, folder, f"{stem}.{suffix}", suffix.rsplit(".", 1)[-1], ledger, existing)
        if target.state != "taken":
            break
    return target


def write_claimed(
    rec: Recording,
    target: SidecarTarget,
    text: str,
    ledger: OutputLedger,
    settings: Settings,
    *,
    run_id: str,
    writer: str,
) -> SidecarWrites:
    """Write ``text`` to ``target`` (claimed in the ledger first, written under a temporary name
    and renamed); a file voxflow did not write is left alone unless ``--overwrite``."""
    if target.state == "foreign" and not settings.overwrite:
        return SidecarWrites([], [], [left_alone_note(target)])
    data = text.encode("utf-8")
    claim = Claim(ledger.key(target.uri), rec.recording_id, rec.uri, sha256_of(data), run_id, time.time())
    ledger.journal([claim], writer, run_id)
    return SidecarWrites([target.tree.write_bytes(target.rel, data)], [claim], [])
