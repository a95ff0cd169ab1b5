"""Media served with byte ranges (RFC 9110 §14) so a browser can seek. In a bucket, the object
is read through fsspec (s3fs), only the bytes asked for: one range per request (what browsers
send for media); a range that starts past the end is 416; no or an unreadable Range header gets
the whole object, streamed. A local file is Starlette's FileResponse, which answered 400 to a
Range HTTP says to ignore: :class:`LocalFile` serves the whole file then."""

from __future__ import annotations

import mimetypes
import os
import re
from collections.abc import Iterator

from starlette.datastructures import Headers
from starlette.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from voxflow.io.storage import resolve

BLOCK = 1 << 20  # bytes read per step when streaming a whole object
SINGLE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def bucket_media(uri: str, range_header: str | None) -> Response:
    """The object at ``uri`` (whole, or the one range asked for)."""
    fs, path = resolve(uri)
    size = int(fs.info(path)["size"])
    headers = {"Accept-Ranges": "bytes"}
    media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
    wanted = _range(range_header, size)
    if wanted is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(_blocks(fs, path, 0, size), headers=headers, media_type=media_type)
    if wanted == "unsatisfiable":
        return PlainTextResponse(
            "416: range not satisfiable", status_code=416, headers={"Content-Range": f"bytes */{size}"}
        )
    start, end = wanted
    with fs.open(path, "rb") as obj:
        obj.seek(start)
        data = obj.read(end - start + 1)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(data, status_code=206, headers=headers, media_type=media_type)


def _range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(first, last) byte of the one range asked for; "unsatisfiable"; or None for the whole object."""
    match = SINGLE_RANGE.match((header or "").strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        return (max(0, size - int(last)), size - 1) if int(last) > 0 and size else "unsatisfiable"
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size:
        return "unsatisfiable"
    return (start, end) if start <= end else None  # last before first: ignore the header (§14.2)


def _blocks(fs: object, path: str, start: int, size: int) -> Iterator[bytes]:
    with fs.open(path, "rb") as obj:  # type: ignore[attr-defined]
        obj.seek(start)
        left = size - start
        while left > 0:
            block = obj.read(min(BLOCK, left))
            if not block:
                return
            left -= len(block)
            yield block


class LocalFile(FileResponse):
    """A local file with byte ranges, the whole file for a Range header HTTP says to ignore."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wanted = Headers(scope=scope).get("range")
        if wanted is not None and _range(wanted, os.stat(self.path).st_size) is None:
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"range"]}
        await super().__call__(scope, receive, send)
