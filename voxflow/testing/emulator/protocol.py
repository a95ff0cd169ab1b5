"""OpenRouter's wire conventions as the emulator speaks them: error answers, the bearer key,
JSON request bodies, price strings and generation ids."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response


class Problem(Exception):
    """An OpenRouter-shaped error answer."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> Response:
        """The error as JSON; ASCII-escaped, so any message (even one quoting a lone
        surrogate from the request) can be sent."""
        body = json.dumps({"error": {"code": self.status, "message": self.message}})
        return Response(body, status_code=self.status, headers=self.headers, media_type="application/json")


def check_key(request: Request, keys: tuple[str, ...]) -> None:
    """401 unless the request carries one of ``keys`` as its bearer token."""
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "No auth credentials found")
    if token.strip() not in keys:
        raise Problem(401, "User not found.")  # what OpenRouter says to an unknown key


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, read in pieces: 413 as soon as it passes ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise Problem(413, f"Request body too large: {int(length)} bytes, the limit is {limit}")
    chunks = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] != "http.request":
            raise Problem(400, "the client went away before the body was sent")
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        request.state.body_done = not more
        size += len(chunk)
        if size > limit:
            raise Problem(413, f"Request body too large: over the {limit}-byte limit")
        chunks.append(chunk)
        if not more:
            break
    return parse_json_object(b"".join(chunks))


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400: malformed, too deeply nested, an integer past
    Python's digit limit, not UTF-8, or with strings that are not valid Unicode."""
    try:
        body = json.loads(raw)
        json.dumps(body, ensure_ascii=False).encode()  # unpaired surrogate escapes ("\ud800")
    except RecursionError:
        raise Problem(400, "Invalid JSON in request body: nested too deeply") from None
    except (ValueError, UnicodeError):  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise Problem(400, "Invalid JSON in request body") from None
    if not isinstance(body, dict):
        raise Problem(400, "Request body must be a JSON object")
    return body


async def drain(request: Request, cap: int = 256 * 1024 * 1024) -> None:
    """Read and drop what is left of a body before an early error answer, so the client
    sees the answer rather than a reset connection (up to ``cap`` bytes)."""
    if getattr(request.state, "body_done", False) or request.method in ("GET", "HEAD"):
        return
    seen = 0
    while seen < cap:
        message = await request.receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def price_str(value: float) -> str:
    """A number as OpenRouter writes prices: plain decimal, no exponent, no trailing zeros."""
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def generation_id(kind: Literal["stt", "tts", "chat"], digest: str) -> str:
    """The ``X-Generation-Id`` of one answer: ``gen-stt-…`` / ``gen-tts-…`` / ``gen-chat-…``, 32 characters."""
    return (f"gen-{kind}-" + sha256(f"{digest}{time.time_ns()}".encode()))[:32]
