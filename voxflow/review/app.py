"""``voxflow serve``: a read-only review site over one output folder (Starlette, Jinja2).

Safe by default:
- only GET/HEAD; it serves the output tree (no hidden parts, no symlinks, nothing outside it)
  and, by recording id and file (``?file=<rel_path>``: identical files share an id), the media
  files the catalog names (by their raw bytes); anything else is 404;
- every href is URL-encoded; a name that is not UTF-8 is linked by its printable form
  (``caf\\xe9.vtt``, see ``voxflow.fsnames``) and mapped back to the one entry inside OUT
  that prints so;
- with a token every request must carry it (``?token=`` once, then a cookie; or the
  ``Authorization: Bearer`` header); without one it listens on loopback only and answers only
  requests addressed to a loopback name (no DNS rebinding).

The narration pages are in :mod:`voxflow.review.narration`; the output tree's safe paths in
:mod:`voxflow.review.files`.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode

import duckdb
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from voxflow.review import narration
from voxflow.review.files import out_rel, real_rel, servable
from voxflow.review.ranges import LocalFile, bucket_media
from voxflow.review.search import SearchIndex, mmss

PAGE_SIZE = 100
COOKIE = "voxflow_token"
LOOPBACK = ["127.0.0.1", "localhost", "::1", "[::1]"]
SortKey = Literal["rel_path", "status", "language", "duration_s", "finished_at", "cost_usd"]
SORTS: tuple[str, ...] = SortKey.__args__  # type: ignore[attr-defined]
MEDIA_TYPES = {".vtt": "text/vtt; charset=utf-8", ".srt": "text/plain; charset=utf-8", ".m4b": "audio/mp4"}

# the latest row of each file: identical files share a recording_id but each has its own rows
_LATEST = """
select * exclude (rn) from (
    select *, row_number() over (
        partition by recording_id, rel_path order by finished_at desc nulls last, run_id desc) rn
    from read_parquet(?, union_by_name = true)) where rn = 1
"""

# the file of a recording_id that search holds (its latest done row, see search._LIVE): a link by id alone opens it
_SEARCHED = """
select arg_max(rel_path, (finished_at, run_id)) from read_parquet(?, union_by_name = true)
where recording_id = ? and status = 'done'
"""


class Catalog:
    """DuckDB queries over the Parquet catalog of ``root`` (read-only, thread-safe)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = duckdb.connect()
        self._lock = threading.Lock()

    def table_glob(self, table: str) -> str | None:
        folder = self.root / "catalog" / table
        return str(folder / "*.parquet") if any(folder.glob("*.parquet")) else None

    def query(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self.db.cursor()
        result = cursor.execute(sql, params)
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]

    def recordings(self, status: str, language: str, sort: str, desc: bool, page: int) -> tuple[list[dict], int]:
        glob = self.table_glob("transcripts")
        if glob is None:
            return [], 0
        where, params = ["true"], [glob]
        if status:
            where.append("status = ?")
            params.append(status)
        if language:
            where.append("language = ?")
            params.append(language)
        base = f"from ({_LATEST}) where {' and '.join(where)}"
        total = self.query(f"select count(*) n {base}", params)[0]["n"]
        order = f"{sort} {'desc' if desc else 'asc'} nulls last, rel_path"
        rows = self.query(
            f"select recording_id, rel_path, status, language, duration_s, cost_usd, finished_at, error_kind, "
            f"error_message {base} order by {order} limit {PAGE_SIZE} offset ?",
            [*params, page * PAGE_SIZE],
        )
        return rows, total

    def facets(self) -> dict[str, list[str]]:
        glob = self.table_glob("transcripts")
        if glob is None:
            return {"status": [], "language": []}
        rows = self.query(f"select distinct status, language from ({_LATEST})", [glob])
        return {k: sorted({r[k] for r in rows if r[k]}) for k in ("status", "language")}

    def recording(self, recording_id: str, rel_path: str | None) -> dict[str, Any] | None:
        """The latest and latest done rows of file ``rel_path`` of ``recording_id`` (None: the file search
        holds for that id, else the first)."""
        glob = self.table_glob("transcripts")
        if glob is None:
            return None
        rows = self.query(
            f"select * from ({_LATEST}) where recording_id = ? and (rel_path = ? or ? is null) "
            f"order by rel_path = ({_SEARCHED}) desc nulls last, rel_path limit 1",
            [glob, recording_id, rel_path, rel_path, glob, recording_id],
        )
        if not rows:
            return None
        done = self.query(
            "select * from read_parquet(?, union_by_name = true) where recording_id = ? and rel_path = ? "
            "and status = 'done' order by finished_at desc nulls last, run_id desc limit 1",
            [glob, recording_id, rows[0]["rel_path"]],
        )
        return {"latest": rows[0], "done": done[0] if done else None}

    def segments(self, done: dict[str, Any]) -> list[dict[str, Any]]:
        part = self.root / "catalog" / "segments" / Path(done.get("segments_part") or "").name
        if not part.is_file():
            return []
        return self.query(
            "select seq, start_ms, end_ms, text, speaker from read_parquet(?) "
            "where recording_id = ? and run_id = ? order by seq",
            [str(part), done["recording_id"], done["run_id"]],
        )

    def translation_outputs(self, recording_id: str, rel_path: str) -> list[str]:
        """Every sidecar of the file's translations made through chat (also those a later run added)."""
        glob = self.table_glob("translations")
        if glob is None:
            return []
        rows = self.query(
            "select outputs from read_parquet(?, union_by_name = true) where recording_id = ? and rel_path = ? "
            "and status = 'done' order by finished_at",
            [glob, recording_id, rel_path],
        )
        return [uri for row in rows for uri in row["outputs"] or []]

    def minutes(self, recording_id: str, rel_path: str) -> dict[str, Any] | None:
        """The latest minutes made for the file, as the page shows them (None: none made)."""
        glob = self.table_glob("minutes")
        if glob is None:
            return None
        rows = self.query(
            "select * from read_parquet(?, union_by_name = true) where recording_id = ? and rel_path = ? "
            "and status = 'done' order by finished_at desc nulls last, run_id desc limit 1",
            [glob, recording_id, rel_path],
        )
        return shown_minutes(rows[0]) if rows else None


def shown_minutes(row: dict[str, Any]) -> dict[str, Any]:
    """A ``minutes`` row for the page: the summary cut into text and cited times (seconds), and
    each decision and action item with its cited times as seconds."""
    from voxflow.minutes import TIMESTAMP, parse_ts

    def cites(point: dict[str, Any]) -> list[tuple[str, float]]:
        return [(c, ms / 1000) for c in point.get("cites") or [] if (ms := parse_ts(c)) is not None]

    summary: list[tuple[str, float | None]] = []
    for i, piece in enumerate(TIMESTAMP.split(row.get("summary") or "")):
        ms = parse_ts(piece) if i % 2 else None
        summary.append((f"[{piece}]", ms / 1000) if ms is not None else (piece, None))
    points = {k: json.loads(row.get(k) or "[]") for k in ("decisions", "action_items")}
    return {
        "summary": summary,
        "decisions": [{**p, "times": cites(p)} for p in points["decisions"]],
        "action_items": [{**p, "times": cites(p)} for p in points["action_items"]],
        "model": row.get("model"),
    }


class AnyPath(Convertor[str]):
    """A path that may hold any character, newlines too (Starlette's ``path`` stops at one)."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", AnyPath())


class TokenGate(BaseHTTPMiddleware):
    """Every request carries the token: ``?token=`` (then a cookie), a cookie, or a Bearer header."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.token = token

    def _ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())

    async def dispatch(self, request: Request, call_next: Any) -> Response:
        header = request.headers.get("authorization", "")
        if self._ok(request.query_params.get("token")):
            query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return response
        if self._ok(request.cookies.get(COOKIE)) or self._ok(header.removeprefix("Bearer ")):
            return await call_next(request)
        return PlainTextResponse("401: a token is needed (?token=…, or Authorization: Bearer …)", status_code=401)


def create_app(root: Path, token: str | None = None) -> Starlette:
    """The review site of output folder ``root``."""
    root = root.resolve()
    catalog = Catalog(root)
    index_lock = threading.Lock()
    env = Environment(loader=PackageLoader("voxflow.review", "templates"), autoescape=select_autoescape())
    env.filters["mmss"] = mmss

    def render(name: str, **context: Any) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**context))

    async def runs(request: Request) -> Response:
        return render("runs.html", runs=_runs(root))

    def recordings(request: Request) -> Response:
        q = request.query_params
        sort = q.get("sort") if q.get("sort") in SORTS else "rel_path"
        desc = q.get("dir") == "desc"
        page = max(0, _int(q.get("page"), 0))
        status, language = q.get("status", ""), q.get("language", "")
        rows, total = catalog.recordings(status, language, sort, desc, page)
        pages = max(1, math.ceil(total / PAGE_SIZE))
        link = {"status": status, "language": language, "sort": sort, "dir": "desc" if desc else "asc"}
        return render("recordings.html", rows=rows, total=total, page=page, pages=pages, link=link,
                      facets=catalog.facets(), urlencode=urlencode)  # fmt: skip

    def recording(request: Request) -> Response:
        found = catalog.recording(request.path_params["recording_id"], request.query_params.get("file"))
        if found is None:
            return PlainTextResponse("404: no such recording", status_code=404)
        latest, done = found["latest"], found["done"]
        outputs = [
            *((done or latest).get("outputs") or []),
            *catalog.translation_outputs(latest["recording_id"], latest["rel_path"]),
        ]
        sidecars = list(dict.fromkeys(r for r in (out_rel(root, u) for u in outputs) if r))
        vtt = next((s for s in sidecars if s.endswith(".vtt")), None)
        qa = {k: v for k, v in (done or latest).items() if k.startswith("qa_")}
        start = max(0.0, _float(request.query_params.get("t"), 0.0))
        media = _media_path(done or latest) or _bucket_uri(done or latest)
        is_video = media is not None and Path(str(media)).suffix.lower() in (".mp4", ".mkv", ".webm", ".mov", ".m4v")
        return render("recording.html", rec=latest, done=done, segments=catalog.segments(done) if done else [],
                      sidecars=sidecars, vtt=vtt, qa=qa, start=start, has_media=media is not None,
                      is_video=is_video, minutes=catalog.minutes(latest["recording_id"], latest["rel_path"]),
                      urlencode=urlencode)  # fmt: skip

    def search_page(request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        hits = []
        if query:
            with index_lock:
                index = SearchIndex(root)
                try:
                    index.refresh()
                    hits = index.search(query, limit=min(100, max(1, _int(request.query_params.get("limit"), 20))))
                finally:
                    index.close()
        if request.query_params.get("format") == "json":
            return Response(json.dumps([h.as_dict() for h in hits]), media_type="application/json")
        return render("search.html", q=query, hits=hits)

    def media(request: Request) -> Response:
        found = catalog.recording(request.path_params["recording_id"], request.query_params.get("file"))
        row = (found["done"] or found["latest"]) if found else {}
        path = _media_path(row)
        if path is not None:
            return LocalFile(path)
        uri = _bucket_uri(row)
        if uri is not None:
            try:
                return bucket_media(uri, request.headers.get("range"))
            except (OSError, ValueError):  # gone from the bucket, or the bucket is unreachable
                pass
        return PlainTextResponse("404: no media for this recording", status_code=404)

    def out_file(request: Request) -> Response:
        path = servable(root, real_rel(root, request.path_params["path"]))
        if path is None:
            return PlainTextResponse("404: not found", status_code=404)
        return LocalFile(path, media_type=MEDIA_TYPES.get(path.suffix.lower()))

    routes = [
        Route("/", runs),
        Route("/recordings", recordings),
        Route("/recording/{recording_id}", recording),
        Route("/media/{recording_id}", media),
        Route("/file/{path:anypath}", out_file),
        Route("/search", search_page),
        *narration.routes(root, catalog, render),
        Mount("/static", StaticFiles(packages=[("voxflow.review", "static")]), name="static"),
    ]
    # without a token only loopback names are answered: a rebound DNS name cannot reach the archive
    middleware = (
        [Middleware(TokenGate, token=token)] if token else [Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK)]
    )
    return Starlette(routes=routes, middleware=middleware)


def _media_path(row: dict[str, Any]) -> Path | None:
    """The local media file a catalog row names (by its source's real bytes), if it is still there."""
    raw = row.get("source_uri_bytes")
    uri = os.fsdecode(raw) if raw is not None else row.get("source_uri") or ""
    if "://" in uri and not uri.startswith("file://"):
        return None
    path = Path(uri.removeprefix("file://"))
    return path if path.is_absolute() and path.is_file() else None


def _bucket_uri(row: dict[str, Any]) -> str | None:
    """The bucket URL (``s3://…``) a catalog row names as its source, if it is one."""
    uri = row.get("source_uri") or ""
    return uri if uri.startswith("s3://") else None


def _runs(root: Path) -> list[dict[str, Any]]:
    runs = []
    for path in sorted((root / "runs").glob("*.json"), reverse=True):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        started, finished = data.get("started_at") or 0, data.get("finished_at") or 0
        data["duration_s"] = round(finished - started, 1) if finished and started else None
        runs.append(data)
    return runs


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _float(value: str | None, default: float) -> float:
    try:
        number = float(value) if value is not None else default
    except ValueError:
        return default
    return number if math.isfinite(number) else default
