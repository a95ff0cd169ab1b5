"""Full-text search over every committed transcript: BM25 over a DuckDB table of segments.

DuckDB's ``fts`` extension is downloaded from the network on ``INSTALL fts`` and is not in the
wheel, so ranking is done here in SQL: a postings table (term, segment, term frequency) and
Okapi BM25 (k1 = 1.2, b = 0.75). The index lives in ``OUT/.voxflow/search.duckdb`` and is
refreshed incrementally: only catalog part files not indexed yet are read.

Invariants:
- Only committed rows are searchable: transcripts rows with ``status = 'done'``; a recording's
  segments are those of its latest done row's ``(recording_id, run_id)``.
- Transcripts part files are listed before segments part files, so a committed row's segments
  (written first, see ``catalog.COMMIT_ORDER``) are always read by the same refresh.
- Query words are split by the same DuckDB expression as the index (no tokeniser drift).
- Exact phrases (quoted, or the whole multi-word query) rank above bag-of-words matches.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

from voxflow.errors import ConfigError

log = logging.getLogger("voxflow.review")
WORD = r"[\pL\pN]+(?:'[\pL\pN]+)*"
K1, B = 1.2, 0.75
INDEX_FILE = ".voxflow/search.duckdb"

_SCHEMA = """
create table if not exists indexed_parts(path varchar primary key);
create table if not exists commits(recording_id varchar, run_id varchar, rel_path varchar, finished_at timestamptz);
create sequence if not exists doc_ids;
create table if not exists segments(doc_id bigint, recording_id varchar, run_id varchar, seq integer,
    start_ms bigint, end_ms bigint, text varchar, norm varchar, n_words integer);
create table if not exists postings(term varchar, doc_id bigint, tf integer);
"""

_LIVE = """
create or replace table live as
with latest as (
    select recording_id, arg_max(run_id, (finished_at, run_id)) as run_id,
           arg_max(rel_path, (finished_at, run_id)) as rel_path
    from commits group by recording_id)
select s.doc_id, s.recording_id, s.start_ms, s.end_ms, s.text, s.norm, s.n_words, l.rel_path
from segments s join latest l using (recording_id, run_id);
create or replace table df as
select p.term, count(*) as df from postings p semi join live l on p.doc_id = l.doc_id group by p.term;
create or replace table stats as select count(*) as n, coalesce(avg(n_words), 1) as avgdl from live;
"""

_QUERY = f"""
with q as (select unnest(?::varchar[]) as term),
scored as (
    select p.doc_id,
           sum(ln(1 + (st.n - d.df + 0.5) / (d.df + 0.5))
               * p.tf * ({K1} + 1) / (p.tf + {K1} * (1 - {B} + {B} * l.n_words / st.avgdl))) as score
    from postings p join q using (term) join df d using (term) join live l on l.doc_id = p.doc_id, stats st
    group by p.doc_id)
select l.recording_id, l.rel_path, l.start_ms, l.end_ms, l.text, s.score,
       list_sum([contains(' ' || l.norm || ' ', ' ' || ph || ' ')::int for ph in ?::varchar[]]) as phrases
from scored s join live l using (doc_id)
order by phrases desc, s.score desc, l.rel_path, l.start_ms
limit ?
"""


@dataclass(frozen=True)
class Hit:
    recording_id: str
    rel_path: str
    start_ms: int
    end_ms: int
    time: str
    snippet: str
    score: float
    phrase: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def mmss(ms: int) -> str:
    """``ms`` as m:ss (minutes grow past 59: 75:03)."""
    seconds = int(ms // 1000)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def local_root(out: str) -> Path:
    """The output folder ``out`` as a local path; buckets are refused with what to do."""
    if "://" in out and not out.startswith("file://"):
        raise ConfigError(f"--out {out}: search and serve read a local output folder; sync the bucket locally first")
    root = Path(out.removeprefix("file://")).expanduser()
    if not (root / "catalog").is_dir():
        raise ConfigError(f"--out {out} has no catalog/ folder: name the output folder of a transcribe run")
    return root


class SearchIndex:
    """The search index of one output folder; ``refresh`` before ``search``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = _connect(root / INDEX_FILE)
        self.db.execute(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    def refresh(self) -> int:
        """Index the part files not indexed yet; returns how many were read."""
        transcripts = self._new_parts("transcripts")  # first: their segments are already written
        segments = self._new_parts("segments")
        for path in transcripts:
            self._index_part(path, self._add_commits)
        for path in segments:
            self._index_part(path, self._add_segments)
        if transcripts or segments or not self._has_live():
            self.db.execute(_LIVE)
        return len(transcripts) + len(segments)

    def search(self, query: str, limit: int = 20) -> list[Hit]:
        """The ``limit`` best segments for ``query``: exact phrases first, then by BM25."""
        terms, phrases = self._parse(query)
        if not terms:
            return []
        rows = self.db.execute(_QUERY, [sorted(set(terms)), phrases, limit]).fetchall()
        return [
            Hit(rid, rel, start, end, mmss(start), _snippet(text), round(score, 4), bool(ph))
            for rid, rel, start, end, text, score, ph in rows
        ]

    def _parse(self, query: str) -> tuple[list[str], list[str]]:
        quoted = re.findall(r'"([^"]+)"', query)
        terms = self._words(query)
        phrases = [" ".join(self._words(q)) for q in quoted] or ([" ".join(terms)] if len(terms) > 1 else [])
        return terms, [p for p in phrases if p]

    def _words(self, text: str) -> list[str]:
        return self.db.execute("select regexp_extract_all(lower(?), ?)", [text, WORD]).fetchone()[0]

    def _has_live(self) -> bool:
        return bool(self.db.execute("select count(*) from duckdb_tables() where table_name = 'live'").fetchone()[0])

    def _new_parts(self, table: str) -> list[str]:
        found = sorted(str(p) for p in (self.root / "catalog" / table).glob("*.parquet"))
        if not found:
            return []
        known = {r[0] for r in self.db.execute("select path from indexed_parts where path in ?", [found]).fetchall()}
        return [p for p in found if p not in known]

    def _index_part(self, path: str, add) -> None:
        try:
            self.db.execute("begin")
            add(path)
            self.db.execute("insert into indexed_parts values (?)", [path])
            self.db.execute("commit")
        except duckdb.Error as exc:
            self.db.execute("rollback")
            log.warning("search index: skipped %s (%s); it is retried next time", path, exc)

    def _add_commits(self, path: str) -> None:
        self.db.execute(
            "insert into commits select recording_id, run_id, rel_path, finished_at "
            "from read_parquet(?) where status = 'done'",
            [path],
        )

    def _add_segments(self, path: str) -> None:
        self.db.execute(
            """
            create or replace temp table fresh as
            select nextval('doc_ids') as doc_id, recording_id, run_id, seq, start_ms, end_ms, text,
                   regexp_extract_all(lower(coalesce(text, '')), ?) as words
            from read_parquet(?)""",
            [WORD, path],
        )
        self.db.execute(
            "insert into segments select doc_id, recording_id, run_id, seq, start_ms, end_ms, text, "
            "array_to_string(words, ' '), len(words) from fresh"
        )
        self.db.execute(
            "insert into postings select term, doc_id, count(*) from "
            "(select doc_id, unnest(words) as term from fresh) group by term, doc_id"
        )
        self.db.execute("drop table fresh")


def _connect(path: Path, attempts: int = 100) -> duckdb.DuckDBPyConnection:
    """The index database at ``path``; while another process holds it, wait (up to ≈ 10 s); if it
    cannot be written at all (read-only output folder), an in-memory index built afresh."""
    for _ in range(attempts):
        try:
            path.parent.mkdir(exist_ok=True)
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                log.warning("search index %s cannot be used (%s); indexing in memory", path, exc)
                break
            time.sleep(0.1)
        except OSError as exc:
            log.warning("search index %s cannot be written (%s); indexing in memory", path, exc.strerror or exc)
            break
    else:
        raise ConfigError(f"the search index {path} is held by another process: try again when it is done")
    return duckdb.connect()


def _snippet(text: str, width: int = 200) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def search(out: str, query: str, limit: int = 20) -> list[Hit]:
    """Refresh the index of output folder ``out`` and search it."""
    index = SearchIndex(local_root(out))
    try:
        index.refresh()
        return index.search(query, limit)
    finally:
        index.close()
