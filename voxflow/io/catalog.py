"""The only module that writes Parquet: the catalog tables, and the skip/resume index.

Tables are append-only part files, ``catalog/<table>/part-<run_id>-<writer>-<n>.parquet``, one
writer per run, so many workers never collide; the current state is the latest row per key.
DuckDB reads them with ``read_parquet('OUT/catalog/transcripts/*.parquet')``.

Invariants:
- A flush writes ``segments`` and ``words`` first and ``transcripts`` last: the transcripts
  part is the commit marker. Segment/word rows without a transcripts row naming their
  ``(recording_id, run_id)`` are leftovers of a crash; readers ignore them.
- Segments and words are written once per ``(recording_id, run_id)``; every transcripts row
  names the part file that holds them (``segments_part``) and how many there are
  (``n_segments``, ``n_words``). A restore reads exactly that one version.
- A part file that cannot be read is moved to ``catalog/_quarantine/<table>-<name>`` with one
  warning; its rows are ignored, so what they recorded is redone.
- File names are stored losslessly: ``rel_path``/``source_uri`` as UTF-8 text (bytes that are
  not UTF-8 escaped as ``\\xff``), and their raw bytes in ``rel_path_bytes``/``source_uri_bytes``.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from voxflow.errors import OutputError
from voxflow.fsnames import printable_tree, raw_name
from voxflow.io.outputs import OutputTree
from voxflow.models import Quality, RecordingResult, Segment, Transcript, Word

log = logging.getLogger("voxflow.io.catalog")
COMMIT_ORDER = (
    "segments",
    "words",
    "narrations",
    "outputs",
    "translations",
    "minutes",
    "transcripts",
)  # transcripts last: the commit marker
QUARANTINE = "catalog/_quarantine"
# What reading a damaged part file raises (empty, garbage, truncated: ArrowInvalid; pages that
# do not decompress: OSError). An OSError is blamed on the file only when its bytes read fine
# (see _readable): a bucket that cannot be reached quarantines nothing.
DAMAGED = (pa.ArrowException, ValueError, OSError)

_ts = pa.timestamp("ms", tz="UTC")
SCHEMAS: dict[str, pa.Schema] = {
    "transcripts": pa.schema(
        [
            ("recording_id", pa.string()),
            ("source_uri", pa.string()),
            ("rel_path", pa.string()),
            ("size_bytes", pa.int64()),
            ("duration_s", pa.float64()),
            ("model", pa.string()),
            ("language", pa.string()),
            ("text", pa.string()),
            ("status", pa.string()),
            ("error_kind", pa.string()),
            ("error_message", pa.string()),
            ("n_chunks", pa.int32()),
            ("attempts", pa.int32()),
            ("cost_usd", pa.float64()),
            ("options_hash", pa.string()),
            ("run_id", pa.string()),
            ("started_at", _ts),
            ("finished_at", _ts),
            ("outputs", pa.list_(pa.string())),
            ("truncated", pa.bool_()),
            ("warnings", pa.list_(pa.string())),
            ("rel_path_bytes", pa.binary()),  # the name's real bytes (rel_path escapes non-UTF-8)
            ("source_uri_bytes", pa.binary()),
            ("n_segments", pa.int32()),
            ("n_words", pa.int32()),
            ("segments_part", pa.string()),  # the segments/ and words/ part file with its rows
            ("language_probability", pa.float64()),  # how sure detection was; null: language given
            ("languages", pa.list_(pa.struct([("language", pa.string()), ("seconds", pa.float64())]))),
            ("qa_segments_dropped", pa.int32()),  # see models.Quality
            ("qa_max_chars_per_s", pa.float64()),
            ("qa_speech_s", pa.float64()),
            ("qa_detected_speech_s", pa.float64()),
            ("worker", pa.string()),  # where it ran: a Dask worker's address, or host:pid
            ("audio_stream", pa.int32()),  # which audio stream was transcribed (0 = the first)
        ]
    ),
    "segments": pa.schema(
        [
            ("recording_id", pa.string()),
            ("run_id", pa.string()),
            ("seq", pa.int32()),
            ("start_ms", pa.int64()),
            ("end_ms", pa.int64()),
            ("text", pa.string()),
            ("speaker", pa.string()),
            ("confidence", pa.float64()),
        ]
    ),
    "words": pa.schema(
        [
            ("recording_id", pa.string()),
            ("run_id", pa.string()),
            ("seq", pa.int32()),
            ("segment_seq", pa.int32()),
            ("start_ms", pa.int64()),
            ("end_ms", pa.int64()),
            ("word", pa.string()),
            ("speaker", pa.string()),
            ("confidence", pa.float64()),
        ]
    ),
    "narrations": pa.schema(
        [
            ("document_id", pa.string()),
            ("source_uri", pa.string()),
            ("chapter_index", pa.int32()),
            ("chapter_title", pa.string()),
            ("model", pa.string()),
            ("voice", pa.string()),
            ("n_chars", pa.int64()),
            ("duration_s", pa.float64()),
            ("cost_usd", pa.float64()),
            ("output_uri", pa.string()),
            ("status", pa.string()),
            ("error_message", pa.string()),
            ("run_id", pa.string()),
            ("options_hash", pa.string()),
            ("error_kind", pa.string()),
            ("finished_at", _ts),
            ("worker", pa.string()),  # where it ran: a Dask worker's address, or host:pid
        ]
    ),
}


def _when(epoch_s: float) -> datetime | None:
    return datetime.fromtimestamp(epoch_s, tz=UTC) if epoch_s else None


def transcript_row(r: RecordingResult, run_id: str) -> dict[str, Any]:
    rec = r.recording
    return {
        "recording_id": rec.recording_id,
        "source_uri": rec.uri,
        "rel_path": rec.rel_path,
        "size_bytes": rec.size_bytes,
        "duration_s": r.duration_ms / 1000,
        "model": r.model,
        "language": r.language,
        "text": r.text,
        "status": r.status,
        "error_kind": r.error_kind,
        "error_message": r.error_message,
        "n_chunks": r.n_chunks,
        "attempts": r.attempts,
        "cost_usd": r.cost_usd,
        "options_hash": r.options_hash,
        "run_id": run_id,
        "started_at": _when(r.started_at),
        "finished_at": _when(r.finished_at),
        "outputs": list(r.outputs),
        "truncated": r.truncated,
        "warnings": list(r.warnings),
        "rel_path_bytes": raw_name(rec.rel_path),
        "source_uri_bytes": raw_name(rec.uri),
        "n_segments": len(r.segments),
        "n_words": sum(len(s.words) for s in r.segments),
        "segments_part": None,  # filled when the writer flushes
        "language_probability": r.language_probability,
        "languages": [{"language": code, "seconds": seconds} for code, seconds in r.languages],
        **quality_columns(r.quality),
        "worker": r.worker or None,
        "audio_stream": r.audio_stream,
    }


def quality_columns(quality: Quality | None) -> dict[str, Any]:
    names = ("segments_dropped", "max_chars_per_s", "speech_s", "detected_speech_s")
    return {f"qa_{name}": getattr(quality, name) if quality else None for name in names}


def segment_rows(recording_id: str, run_id: str, segments: Sequence[Segment]) -> list[dict]:
    return [
        {
            "recording_id": recording_id,
            "run_id": run_id,
            "seq": i,
            "start_ms": s.start_ms,
            "end_ms": s.end_ms,
            "text": s.text,
            "speaker": s.speaker,
            "confidence": s.confidence,
        }
        for i, s in enumerate(segments)
    ]


def word_rows(recording_id: str, run_id: str, segments: Sequence[Segment]) -> list[dict]:
    rows, seq = [], 0
    for seg_i, seg in enumerate(segments):
        for w in seg.words:
            rows.append(
                {
                    "recording_id": recording_id,
                    "run_id": run_id,
                    "seq": seq,
                    "segment_seq": seg_i,
                    "start_ms": w.start_ms,
                    "end_ms": w.end_ms,
                    "word": w.word,
                    "speaker": w.speaker or seg.speaker,
                    "confidence": w.confidence,
                }
            )
            seq += 1
    return rows


class CatalogWriter:
    """Buffers rows per table and writes them as new part files (thread-safe)."""

    def __init__(self, out: OutputTree, run_id: str, *, writer: str = "w0", flush_every: int = 64):
        self.out = out
        self.run_id = run_id
        self.writer = writer
        self.flush_every = flush_every
        self._rows: dict[str, list[dict]] = {t: [] for t in SCHEMAS}
        self._parts = 0
        self._pending_results = 0
        self._lock = threading.Lock()
        self._after_flush: list[Callable[[], None]] = []
        self._segmented: dict[str, str | None] = {}  # recording_id → its segments part (None: not flushed yet)
        self.written: list[str] = []

    def add_result(self, result: RecordingResult, on_flushed: Callable[[], None] | None = None) -> None:
        """A transcripts row, plus segment and word rows for a finished recording (once per
        recording id in this run: an identical file's row shares them).

        ``on_flushed`` runs once those rows are safely in a part file (e.g. to drop the
        recording's chunk checkpoints, which must outlive a crash before the flush)."""
        rid = result.recording.recording_id
        with self._lock:
            if on_flushed:
                self._after_flush.append(on_flushed)
            self._rows["transcripts"].append(transcript_row(result, self.run_id))
            if result.status == "done" and rid not in self._segmented:
                self._segmented[rid] = None
                self._rows["segments"].extend(segment_rows(rid, self.run_id, result.segments))
                self._rows["words"].extend(word_rows(rid, self.run_id, result.segments))
            self._pending_results += 1
            due = self._pending_results >= self.flush_every
        if due:
            self.flush()

    def add_rows(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            self._rows[table].extend(rows)

    def flush(self) -> None:
        """Write every buffered table as a new part file, transcripts last (the commit marker)."""
        with self._lock:
            self._parts += 1
            part = f"part-{self.run_id}-{self.writer}-{self._parts:04d}.parquet"
            for rid, where in self._segmented.items():
                if where is None:
                    self._segmented[rid] = part
            for row in self._rows["transcripts"]:
                row["segments_part"] = self._segmented.get(row["recording_id"])
            batches = {t: self._rows[t] for t in COMMIT_ORDER if self._rows[t]}
            self._rows = {t: [] for t in SCHEMAS}
            self._pending_results = 0
            callbacks, self._after_flush = self._after_flush, []
        for table, rows in batches.items():
            self.written.append(self.out.write_bytes(f"catalog/{table}/{part}", to_parquet(rows, SCHEMAS[table])))
        for callback in callbacks:
            callback()


def to_parquet(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    buffer = io.BytesIO()
    try:
        table = pa.Table.from_pylist(rows, schema=schema)
    except UnicodeEncodeError:  # a file name that is not UTF-8, in a path or a message
        table = pa.Table.from_pylist(printable_tree(rows), schema=schema)
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def read_table(out: OutputTree, table: str, columns: list[str] | None = None, filter: Any = None) -> pa.Table:
    """All readable part files of ``table`` (empty table with the schema when there are none).

    A part file that cannot be read is quarantined (see the module doc). ``columns`` may
    include ``__filename``, the part file each row came from."""
    files = out.glob(f"catalog/{table}/*.parquet")
    while files:
        try:
            return _dataset(out, table, files).to_table(columns=columns, filter=filter)
        except DAMAGED:
            bad = [f for f in files if not _readable(out, table, f)]
            if not bad:
                raise
            for path in bad:
                quarantine(out, table, path)
            files = [f for f in files if f not in bad]
    empty = SCHEMAS[table].empty_table()
    if columns and "__filename" in columns:
        empty = empty.append_column("__filename", pa.array([], pa.string()))
    return empty.select(columns) if columns else empty


def _dataset(out: OutputTree, table: str, files: list[str]) -> ds.Dataset:
    return ds.dataset(files, schema=SCHEMAS[table], format="parquet", filesystem=out.fs)


def _readable(out: OutputTree, table: str, path: str) -> bool:
    """True when the whole part file reads (or has vanished: another reader moved it)."""
    return _read_state(out, table, path) != "damaged"


def _read_state(out: OutputTree, table: str, path: str) -> Literal["whole", "missing", "damaged"]:
    """Whether a part file reads whole, is gone, or is there but damaged (OutputError when
    the store itself cannot be read: that is not the file's fault)."""
    try:
        _dataset(out, table, [path]).to_table()
    except FileNotFoundError:
        return "missing"
    except DAMAGED:
        _fetchable(out, path)
        return "damaged" if out.fs.exists(path) else "missing"
    return "whole"


def _fetchable(out: OutputTree, path: str) -> None:
    """Raise OutputError when ``path``'s bytes cannot be fetched at all (the store, not the file)."""
    try:
        out.fs.cat_file(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise OutputError(f"cannot read the catalog at {out.url}: {exc}") from exc


def intact(out: OutputTree, table: str, part: str) -> bool:
    """True when ``catalog/<table>/<part>`` is there and reads whole; a damaged one is quarantined."""
    if not part:
        return False
    path = out.path(f"catalog/{table}/{part}")
    state = _read_state(out, table, path)
    if state == "damaged":
        quarantine(out, table, path)
    return state == "whole"


def sweep(out: OutputTree, tables: Iterable[str] = SCHEMAS) -> int:
    """Quarantine every part file of ``tables`` whose footer does not read (empty, garbage,
    truncated), 8 at a time; how many. ``voxflow report`` runs it, so that DuckDB reads the
    rest of the catalog."""
    paths = [(t, p) for t in tables for p in out.glob(f"catalog/{t}/*.parquet")]
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="voxflow-sweep") as pool:
        reads = pool.map(lambda tp: _footer_reads(out, tp[1]), paths)
        damaged = [tp for tp, ok in zip(paths, reads, strict=True) if not ok]
    for table, path in damaged:
        quarantine(out, table, path)
    return len(damaged)


def _footer_reads(out: OutputTree, path: str) -> bool:
    try:
        with out.fs.open(path, "rb") as fh:
            pq.read_metadata(fh)
    except FileNotFoundError:
        return True
    except DAMAGED:
        _fetchable(out, path)
        return False
    return True


def quarantine(out: OutputTree, table: str, path: str) -> None:
    """Move an unreadable part file to ``catalog/_quarantine/<table>-<name>`` and say so once."""
    name = path.rsplit("/", 1)[-1]
    target = out.path(f"{QUARANTINE}/{table}-{name}")
    try:
        if out.local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        out.fs.mv(path, target)
    except FileNotFoundError:
        return  # another reader quarantined it first
    except OSError as exc:
        log.warning("catalog: %s is unreadable and could not be moved aside (%s); its rows are ignored", path, exc)
        return
    what = "the recordings whose rows it held are redone" if table != "narrations" else "its chapters are redone"
    log.warning(
        "catalog: unreadable part file catalog/%s/%s moved to %s/%s-%s: its rows are ignored and %s",
        table,
        name,
        QUARANTINE,
        table,
        name,
        what,
    )


@dataclass(frozen=True, slots=True)
class DoneRecord:
    """A ``done`` transcripts row of a (recording_id, options_hash)."""

    recording_id: str
    options_hash: str
    run_id: str
    source_uri: str  # the real name (surrogate-escaped str when it is not UTF-8)
    language: str
    text: str
    duration_s: float
    model: str
    outputs: tuple[str, ...]
    segments_part: str = ""  # the part file under segments/ and words/ holding its rows
    n_segments: int | None = None  # None: written by a version that did not count them
    n_words: int | None = None

    def complete(self, intact: Callable[[str, str], bool]) -> bool:
        """True when the part files holding this row's segments and words are intact
        (``intact(table, part)``)."""
        if self.n_segments is None:  # older rows: their segments sit in the same-named part
            return not self.text or intact("segments", self.segments_part)
        has_segments = self.n_segments == 0 or intact("segments", self.segments_part)
        return has_segments and (not self.n_words or intact("words", self.segments_part))


_INDEX_COLUMNS = [
    "recording_id",
    "options_hash",
    "run_id",
    "source_uri",
    "source_uri_bytes",
    "language",
    "text",
    "duration_s",
    "model",
    "outputs",
    "finished_at",
    "n_segments",
    "n_words",
    "segments_part",
    "__filename",
]


def _done_record(row: dict[str, Any]) -> DoneRecord:
    raw = row["source_uri_bytes"]
    return DoneRecord(
        recording_id=row["recording_id"],
        options_hash=row["options_hash"],
        run_id=row["run_id"],
        source_uri=os.fsdecode(raw) if raw is not None else row["source_uri"],
        language=row["language"],
        text=row["text"] or "",
        duration_s=row["duration_s"] or 0.0,
        model=row["model"],
        outputs=tuple(row["outputs"] or ()),
        segments_part=row["segments_part"] or row["__filename"].rsplit("/", 1)[-1],
        n_segments=row["n_segments"],
        n_words=row["n_words"],
    )


class CatalogIndex:
    """What earlier runs finished, for skip/resume decisions."""

    def __init__(self, versions: dict[tuple[str, str], list[DoneRecord]], out: OutputTree | None = None) -> None:
        self.versions = versions  # newest first
        self.done = {key: records[0] for key, records in versions.items()}  # the latest per key
        self._out = out
        self._intact: dict[tuple[str, str], bool] = {}

    @classmethod
    def load(cls, out: OutputTree) -> CatalogIndex:
        table = read_table(out, "transcripts", _INDEX_COLUMNS, filter=ds.field("status") == "done")
        never = datetime.min.replace(tzinfo=UTC)
        rows = sorted(table.to_pylist(), key=lambda r: r["finished_at"] or never, reverse=True)
        versions: dict[tuple[str, str], list[DoneRecord]] = {}
        for row in rows:
            versions.setdefault((row["recording_id"], row["options_hash"]), []).append(_done_record(row))
        return cls(versions, out)

    def get(self, recording_id: str, options_hash: str) -> DoneRecord | None:
        """The latest done row of a recording with these options."""
        return self.done.get((recording_id, options_hash))

    def restorable(self, recording_id: str, options_hash: str) -> DoneRecord | None:
        """The latest done row whose segments and words are all in the catalog (None: redo it)."""
        for record in self.versions.get((recording_id, options_hash), ()):
            if record.complete(self._part_intact):
                return record
        return None

    def _part_intact(self, table: str, part: str) -> bool:
        if (table, part) not in self._intact:
            self._intact[(table, part)] = self._out is not None and intact(self._out, table, part)
        return self._intact[(table, part)]


def load_transcript(out: OutputTree, record: DoneRecord) -> Transcript:
    """Rebuild a finished transcript (segments with words) from the catalog: one version,
    from the part file its row names (older catalogs may hold the rows twice)."""
    key = (ds.field("recording_id") == record.recording_id) & (ds.field("run_id") == record.run_id)
    segs = _first_version(_rows_in_part(out, "segments", record.segments_part, key))
    words = _first_version(_rows_in_part(out, "words", record.segments_part, key))
    by_segment: dict[int, list[Word]] = {}
    for w in words:
        by_segment.setdefault(w["segment_seq"], []).append(
            Word(w["start_ms"], w["end_ms"], w["word"], w["confidence"], w["speaker"])
        )
    segments = tuple(
        Segment(
            s["start_ms"],
            s["end_ms"],
            s["text"],
            tuple(by_segment.get(s["seq"], ())),
            s["speaker"],
            s["confidence"],
        )
        for s in segs
    )
    n_words = sum(len(s.words) for s in segments)
    if (record.n_segments, record.n_words) not in ((None, None), (len(segments), n_words)):
        raise OutputError(
            f"the catalog holds {len(segments)} of {record.n_segments} segments and {n_words} of "
            f"{record.n_words} words of run {record.run_id}: rerun to transcribe it again"
        )
    return Transcript(text=record.text, language=record.language, segments=segments)


def _rows_in_part(out: OutputTree, table: str, part: str, key: Any) -> list[dict[str, Any]]:
    path = out.path(f"catalog/{table}/{part}")
    if not part or not out.fs.exists(path):
        return []
    try:
        return _dataset(out, table, [path]).to_table(filter=key).to_pylist()
    except DAMAGED:
        _fetchable(out, path)
        quarantine(out, table, path)
        return []


def _first_version(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in file order up to where ``seq`` starts again (a second copy of the same rows)."""
    first: list[dict[str, Any]] = []
    for row in rows:
        if first and row["seq"] <= first[-1]["seq"]:
            break
        first.append(row)
    return first


# --- narration: extra `narrations` columns (added by the narration flow) ------------------
# The columns of design §4 come first (above); these follow them. Older part files without
# them read back as nulls.

NARRATION_EXTRA_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("rel_path", pa.string()),  # printable: bytes that are not UTF-8 as \xNN (voxflow.fsnames)
    ("rel_path_bytes", pa.binary()),  # the rel path's exact bytes
    ("book_title", pa.string()),
    ("author", pa.string()),
    ("language", pa.string()),  # ISO-639-1 of the document (declared or detected); null: not told
    ("start_s", pa.float64()),  # where the chapter starts in output_uri
    ("n_chunks", pa.int32()),
    ("chunks_synthesised", pa.int32()),  # in this run; the rest came from the chunk cache
    ("mastering_passed", pa.bool_()),  # every ACX rule passed on the encoded file
    ("outputs", pa.list_(pa.string())),  # every file of the book (MP3s, M3U, VTT, M4B …)
    ("started_at", _ts),
)
SCHEMAS["narrations"] = pa.schema(
    [
        *SCHEMAS["narrations"],
        *(
            pa.field(name, kind)
            for name, kind in NARRATION_EXTRA_COLUMNS
            if SCHEMAS["narrations"].get_field_index(name) < 0
        ),
    ]
)

# --- outputs: the ledger of files voxflow wrote (see voxflow.ownership) --------------------
SCHEMAS["outputs"] = pa.schema(
    [
        ("path", pa.string()),  # URI of the file
        ("recording_id", pa.string()),
        ("source_uri", pa.string()),
        ("sha256", pa.string()),  # of the bytes written
        ("run_id", pa.string()),
        ("written_at", _ts),
    ]
)

# --- translations: one row per recording per --translate-to language made through chat -------
SCHEMAS["translations"] = pa.schema(
    [
        ("recording_id", pa.string()),
        ("source_uri", pa.string()),
        ("rel_path", pa.string()),
        ("language", pa.string()),  # ISO-639-1 code translated into
        ("translated_from", pa.string()),  # the recording's language
        ("model", pa.string()),  # the OpenRouter chat model
        ("n_cues", pa.int32()),  # cues in the original, and so in the translation
        ("cost_usd", pa.float64()),
        ("status", pa.string()),  # done | failed (no sidecars written)
        ("error_message", pa.string()),
        ("path", pa.string()),  # the first sidecar written (srt when asked for); null when failed
        ("outputs", pa.list_(pa.string())),
        ("run_id", pa.string()),
        ("finished_at", _ts),
    ]
)

# --- minutes: one row per recording per run that made (or failed to make) its --minutes ----
SCHEMAS["minutes"] = pa.schema(
    [
        ("recording_id", pa.string()),
        ("source_uri", pa.string()),
        ("rel_path", pa.string()),
        ("model", pa.string()),  # the OpenRouter chat model
        ("summary", pa.string()),
        ("decisions", pa.string()),  # JSON list of {text, cites: ["mm:ss", …]}
        ("action_items", pa.string()),  # JSON list of {text, owner, due, cites}
        ("n_requests", pa.int32()),  # chat calls made (map, reduce and asked-again)
        ("cost_usd", pa.float64()),
        ("status", pa.string()),  # done | failed (no file written)
        ("error_message", pa.string()),
        ("warnings", pa.list_(pa.string())),  # points dropped for citing what is not in the transcript
        ("path", pa.string()),  # <stem>.minutes.md; null when failed or left alone
        ("run_id", pa.string()),
        ("finished_at", _ts),
    ]
)
