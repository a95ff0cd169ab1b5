"""The only module that writes Parquet: the catalog tables, and the skip/resume index.

Tables are append-only part files, ``catalog/<table>/part-<run_id>-<writer>-<n>.parquet``, one
writer per run, so many workers never collide; the current state is the latest row per key.
DuckDB reads them with ``read_parquet('OUT/catalog/transcripts/*.parquet')``.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from voxflow.models import RecordingResult, Segment, Transcript, Word
from voxflow.sources import OutputTree

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
    }


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
        self.written: list[str] = []

    def add_result(self, result: RecordingResult, on_flushed: Callable[[], None] | None = None) -> None:
        """A transcripts row, plus segment and word rows for a finished recording.

        ``on_flushed`` runs once those rows are safely in a part file (e.g. to drop the
        recording's chunk checkpoints, which must outlive a crash before the flush)."""
        rid = result.recording.recording_id
        with self._lock:
            if on_flushed:
                self._after_flush.append(on_flushed)
            self._rows["transcripts"].append(transcript_row(result, self.run_id))
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
        """Write every buffered table as a new part file."""
        with self._lock:
            batches = {t: rows for t, rows in self._rows.items() if rows}
            self._rows = {t: [] for t in SCHEMAS}
            self._pending_results = 0
            self._parts += 1
            part = self._parts
            callbacks, self._after_flush = self._after_flush, []
        for table, rows in batches.items():
            name = f"catalog/{table}/part-{self.run_id}-{self.writer}-{part:04d}.parquet"
            self.written.append(self.out.write_bytes(name, to_parquet(rows, SCHEMAS[table])))
        for callback in callbacks:
            callback()


def to_parquet(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer, compression="zstd")
    return buffer.getvalue()


def read_table(out: OutputTree, table: str, columns: list[str] | None = None, filter: Any = None) -> pa.Table:
    """All part files of ``table`` (empty table with the schema when there are none)."""
    files = out.glob(f"catalog/{table}/*.parquet")
    schema = SCHEMAS[table]
    if not files:
        return schema.empty_table().select(columns) if columns else schema.empty_table()
    dataset = ds.dataset(files, schema=schema, format="parquet", filesystem=out.fs)
    return dataset.to_table(columns=columns, filter=filter)


@dataclass(frozen=True, slots=True)
class DoneRecord:
    """The latest ``done`` transcripts row of a (recording_id, options_hash)."""

    recording_id: str
    options_hash: str
    run_id: str
    source_uri: str
    language: str
    text: str
    duration_s: float
    model: str
    outputs: tuple[str, ...]


class CatalogIndex:
    """What earlier runs finished, for skip/resume decisions."""

    def __init__(self, done: dict[tuple[str, str], DoneRecord]) -> None:
        self.done = done

    @classmethod
    def load(cls, out: OutputTree) -> CatalogIndex:
        columns = [
            "recording_id",
            "options_hash",
            "run_id",
            "source_uri",
            "language",
            "text",
            "duration_s",
            "model",
            "outputs",
            "status",
            "finished_at",
        ]
        table = read_table(out, "transcripts", columns, filter=ds.field("status") == "done")
        done: dict[tuple[str, str], DoneRecord] = {}
        rows = sorted(table.to_pylist(), key=lambda r: r["finished_at"] or datetime.min.replace(tzinfo=UTC))
        for row in rows:
            key = (row["recording_id"], row["options_hash"])
            done[key] = DoneRecord(
                recording_id=row["recording_id"],
                options_hash=row["options_hash"],
                run_id=row["run_id"],
                source_uri=row["source_uri"],
                language=row["language"],
                text=row["text"] or "",
                duration_s=row["duration_s"] or 0.0,
                model=row["model"],
                outputs=tuple(row["outputs"] or ()),
            )
        return cls(done)

    def get(self, recording_id: str, options_hash: str) -> DoneRecord | None:
        return self.done.get((recording_id, options_hash))


def load_transcript(out: OutputTree, record: DoneRecord) -> Transcript:
    """Rebuild a finished transcript (segments with words) from the catalog."""
    key = (ds.field("recording_id") == record.recording_id) & (ds.field("run_id") == record.run_id)
    segs = sorted(read_table(out, "segments", filter=key).to_pylist(), key=lambda r: r["seq"])
    words = sorted(read_table(out, "words", filter=key).to_pylist(), key=lambda r: r["seq"])
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
    return Transcript(text=record.text, language=record.language, segments=segments)


# --- narration: extra `narrations` columns (added by the narration flow) ------------------
# The columns of design §4 come first (above); these follow them. Older part files without
# them read back as nulls.

NARRATION_EXTRA_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("rel_path", pa.string()),
    ("book_title", pa.string()),
    ("author", pa.string()),
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
