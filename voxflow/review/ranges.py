"""Media that lives in a bucket, served with byte ranges (RFC 9110 §14) so a browser can seek:
the object is read through fsspec (s3fs), only the bytes asked for. One range per request (what
browsers send for media); a range that starts past the end is 416; no or an unreadable Range
header gets the whole object, streamed."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterator

from starlette.responses import PlainTextResponse, Response, StreamingResponse

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
