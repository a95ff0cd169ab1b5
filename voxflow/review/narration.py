"""``voxflow serve``'s narration pages: each book of the ``narrations`` table, and a book's page with
its chapters' players, their read-along text (cues of each chapter's VTT) and the ACX report.

As read-only and as narrow as the rest of the site: a book is named by its document's ``rel_path``
(``/narration?book=``); its files are read and linked only through :func:`servable` (inside OUT,
not the catalog, no symlinks), so a catalog row naming a file elsewhere shows and serves nothing.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import webvtt
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from voxflow.review.files import out_rel, servable

if TYPE_CHECKING:
    from voxflow.review.app import Catalog

NarrationStatus = Literal["done", "skipped", "failed"]
NARRATED: tuple[NarrationStatus, ...] = ("done", "skipped")  # a run that left the book's files in place

# per book (rel_path): the rows of its latest run, and of its latest run that narrated it (done or skipped)
_BOOKS = """
with r as (select * from read_parquet(?, union_by_name = true)),
runs as (
    select rel_path, run_id, max(finished_at) as ended, bool_or(status in ('done', 'skipped')) as narrated
    from r group by rel_path, run_id),
pick as (
    select rel_path, arg_max(run_id, (ended, run_id)) as latest,
           arg_max(run_id, (ended, run_id)) filter (where narrated) as narrated_run
    from runs group by rel_path)
select r.*, r.run_id = p.latest as is_latest, r.run_id = p.narrated_run as is_narrated
from r join pick p on r.rel_path = p.rel_path and (r.run_id = p.latest or r.run_id = p.narrated_run)
where (? is null or r.rel_path = ?)
order by r.rel_path, r.chapter_index nulls first
"""


@dataclass(frozen=True)
class Book:
    """One document's narration: the rows of its latest run and of its latest narrated run."""

    rel_path: str
    latest: list[dict[str, Any]]
    narrated: list[dict[str, Any]]  # one row per chapter; empty if it was never narrated

    def _first(self, key: str) -> Any:
        return next((r[key] for r in (*self.narrated, *self.latest) if r.get(key)), None)

    @property
    def title(self) -> str:
        return self._first("book_title") or self.rel_path

    @property
    def author(self) -> str:
        return self._first("author") or ""

    @property
    def language(self) -> str:
        return self._first("language") or ""

    @property
    def status(self) -> NarrationStatus:
        statuses = {r["status"] for r in self.latest}
        return "failed" if "failed" in statuses else "skipped" if statuses == {"skipped"} else "done"

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.latest if r["status"] == "failed"]

    @property
    def duration_ms(self) -> int:
        return round(sum(r.get("duration_s") or 0 for r in self.narrated) * 1000)

    @property
    def cost_usd(self) -> float:
        return sum(r.get("cost_usd") or 0 for r in self.latest)

    @property
    def finished_at(self) -> Any:
        return max((r["finished_at"] for r in self.latest if r.get("finished_at")), default=None)

    @property
    def acx(self) -> Literal["pass", "fail", ""]:
        passed = [r.get("mastering_passed") for r in self.narrated if r.get("mastering_passed") is not None]
        return "" if not passed else "pass" if all(passed) else "fail"


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


@dataclass
class AudioFile:
    """A chapter's audio (or a whole book's, narrated as one file) with its read-along cues."""

    rel: str
    titles: list[str] = field(default_factory=list)
    vtt: str | None = None
    cues: list[Cue] = field(default_factory=list)


def books(catalog: Catalog, rel_path: str | None = None) -> list[Book]:
    """Every narrated document (or the one at ``rel_path``), by rel_path."""
    glob = catalog.table_glob("narrations")
    if glob is None:
        return []
    found: dict[str, Book] = {}
    for row in catalog.query(_BOOKS, [glob, rel_path, rel_path]):
        book = found.setdefault(row["rel_path"], Book(row["rel_path"], [], []))
        if row["is_latest"]:
            book.latest.append(row)
        if row["is_narrated"] and row["status"] in NARRATED:
            book.narrated.append(row)
    return list(found.values())


def audio_files(root: Path, book: Book) -> list[AudioFile]:
    """The book's audio files inside OUT, in chapter order, each with the cues of its VTT (same stem)."""
    files: dict[str, AudioFile] = {}
    for row in book.narrated:
        rel = out_rel(root, row.get("output_uri") or "")
        if rel is None or servable(root, rel) is None:
            continue
        files.setdefault(rel, AudioFile(rel)).titles.append(row.get("chapter_title") or "")
    for audio in files.values():
        vtt = audio.rel.rsplit(".", 1)[0] + ".vtt"
        path = servable(root, vtt)
        if path is not None:
            audio.vtt, audio.cues = vtt, read_cues(path)
    return list(files.values())


def read_cues(path: Path) -> list[Cue]:
    """The cues of a WebVTT file (webvtt-py), their text unescaped; none if it does not parse."""
    try:
        captions = webvtt.from_buffer(io.StringIO(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, webvtt.errors.MalformedFileError):
        return []
    return [
        Cue(c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, html.unescape(c.text))
        for c in captions
    ]


def outputs(root: Path, book: Book) -> list[str]:
    """Every file the book's narration wrote that is still inside OUT (relative paths, as written)."""
    uris = dict.fromkeys(u for r in book.narrated for u in (r.get("outputs") or []))
    rels = (out_rel(root, u) for u in uris)
    return [r for r in rels if r is not None and servable(root, r) is not None]


def acx_report(root: Path, files: list[str]) -> dict[str, Any] | None:
    """The mastering part of the book's report (``<book>.report.json``): per file, each ACX rule."""
    rel = next((f for f in files if f.endswith(".report.json")), None)
    path = servable(root, rel) if rel else None
    try:
        report = json.loads(path.read_text()) if path else {}
    except (OSError, ValueError):
        return None
    mastering = [m for m in report.get("mastering") or [] if isinstance(m, dict)]
    if not mastering:
        return None
    rules = list(dict.fromkeys(r["rule"] for m in mastering for r in m.get("rules") or []))
    table = [{"file": m.get("file"), "passed": m.get("passed"), "rules": {r["rule"]: r for r in m.get("rules") or []}}
             for m in mastering]  # fmt: skip
    notes = sorted({m["note"] for m in mastering if m.get("note")})
    return {"rel": rel, "rules": rules, "files": table, "notes": notes}


def routes(root: Path, catalog: Catalog, render: Callable[..., Response]) -> list[Route]:
    """``/narrations`` (every book) and ``/narration?book=<rel_path>`` (one book)."""

    def narrations(request: Request) -> Response:
        return render("narrations.html", books=books(catalog))

    def narration(request: Request) -> Response:
        rel_path = request.query_params.get("book")
        found = books(catalog, rel_path) if rel_path else []
        if not found:
            return PlainTextResponse("404: no such narration", status_code=404)
        [book] = found
        files = outputs(root, book)
        return render("narration.html", book=book, audio=audio_files(root, book), files=files,
                      acx=acx_report(root, files))  # fmt: skip

    return [Route("/narrations", narrations), Route("/narration", narration)]
