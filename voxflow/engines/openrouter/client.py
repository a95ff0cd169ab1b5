"""The OpenRouter HTTP client: headers and auth, per-loop connection pools, the one retry
policy, the error mapping, and request counting.

Every request goes through :meth:`OpenRouterClient.call`, which owns the one retry layer
for HTTP-transient failures (design §6) — a tenacity policy declared once in
:func:`retry_policy`:

* retried: 408 → EngineTimeout, 429 → RateLimited, 5xx/524/529 → EngineUnavailable, connect
  and read errors, our own ``request_timeout_s`` → EngineTimeout, and a 2xx body that is cut
  short (truncated JSON, odd-length PCM, an HTML error page with status 200). A truncated body
  is almost always a dropped connection, so it is retried like one, within the same attempt
  budget, and surfaces as :class:`~voxflow.errors.BadResponse` if every attempt fails.
  Waits: full-jitter exponential backoff (``wait_random_exponential``), but never less than the
  server's ``Retry-After`` (seconds or an HTTP date, capped at ``MAX_RETRY_AFTER_S``); at most
  ``settings.max_attempts`` attempts; each attempt bounded by ``settings.request_timeout_s``.
* raised at once: 400/403/413 → RequestRejected(status) with the API's own message (413 tells
  the pipeline to split the chunk), 401 → AuthError, 402 → OutOfCredits, 404 → UnknownModel,
  a 2xx JSON answer without the fields we need → BadResponse.

A shared :class:`~voxflow.limits.RequestLimiter` (``client.limiter``) gates every attempt —
a slot is held only while a request is on the wire, never during a backoff sleep — and hears
``rate_limited(retry_after)`` on each 429 and ``succeeded()`` on each 2xx.

The API key lives only in the ``Authorization`` header: :func:`redact` scrubs it (and anything
that looks like an OpenRouter key or a bearer token) from every message we raise or log, and
the ``repr`` of the client and the engines never shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import math
import re
import ssl
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from voxflow import interrupts
from voxflow.errors import (
    AuthError,
    BadResponse,
    ConfigError,
    EngineError,
    EngineTimeout,
    EngineUnavailable,
    OutOfCredits,
    RateLimited,
    RequestRejected,
    TransientEngineError,
    UnknownModel,
)

if TYPE_CHECKING:
    from voxflow.limits import RequestLimiter
    from voxflow.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[Any]]

MAX_RETRY_AFTER_S = 300.0  # a longer Retry-After is capped: the batch keeps moving
BACKOFF_S = 1.0  # full-jitter window: 1, 2, 4, 8 … s
MAX_BACKOFF_S = 60.0

# ─── secrets ────────────────────────────────────────────────────────────────────────────

_KEYLIKE = re.compile(r"sk-or-[A-Za-z0-9_\-]{4,}|(?i:bearer)\s+[A-Za-z0-9_\-.~+/=]{4,}")


def redact(text: str, *secrets: str | None) -> str:
    """``text`` without ``secrets`` and without anything shaped like a key or bearer token."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEYLIKE.sub(lambda m: "Bearer ***" if m[0][:1] in "bB" else "sk-or-***", text)


# ─── counting requests ──────────────────────────────────────────────────────────────────


class RequestCount:
    """How many HTTP requests were sent inside a :func:`count_requests` block."""

    def __init__(self) -> None:
        self._value = 0
        self._lock = threading.Lock()

    @property
    def value(self) -> int:
        return self._value

    def add(self, n: int = 1) -> None:
        with self._lock:
            self._value += n


_request_count: contextvars.ContextVar[RequestCount | None] = contextvars.ContextVar(
    "voxflow_openrouter_request_count", default=None
)


@contextlib.contextmanager
def count_requests() -> Iterator[RequestCount]:
    """Count the HTTP requests (first tries and retries) made in this context.

    Tasks started inside the block (``asyncio.gather``, ``create_task``) share the counter::

        with count_requests() as sent:
            await asyncio.gather(*(engine.transcribe(c, opts) for c in chunks))
        result_attempts = sent.value
    """
    counter = RequestCount()
    token = _request_count.set(counter)
    try:
        yield counter
    finally:
        _request_count.reset(token)


# ─── retry policy ───────────────────────────────────────────────────────────────────────


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class wait_retry_after(wait_base):  # lower case, like tenacity's own waits
    """The ``fallback`` wait, but never less than the failure's ``retry_after`` (capped)."""

    def __init__(self, fallback: wait_base, cap: float = MAX_RETRY_AFTER_S) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = float(self.fallback(retry_state))
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        advised = exc.retry_after if isinstance(exc, TransientEngineError) else None
        if advised is not None:
            wait = max(wait, min(float(advised), self.cap))
        return wait


def _is_truncated(exc: BaseException) -> bool:
    return isinstance(exc, BadResponse) and exc.transient


RETRY_ON = retry_if_exception_type(TransientEngineError) | retry_if_exception(_is_truncated)


def _log_retry(retry_state: RetryCallState) -> None:
    outcome = retry_state.outcome
    exc = outcome.exception() if outcome is not None else None
    wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
    # messages are redacted where they are raised
    log.warning("%s; retry %d in %.1f s", exc, retry_state.attempt_number, wait)


def _stop_requested(_retry_state: RetryCallState) -> bool:
    """Ctrl-C or SIGTERM (voxflow.interrupts): no further attempt is sent."""
    return interrupts.requested()


def _backoff_unless_stopped(sleep: Sleep) -> Sleep:
    """``sleep``, then Interrupted if a stop came meanwhile (the next attempt is never sent)."""

    async def backoff(seconds: float) -> None:
        await sleep(seconds)
        if interrupts.requested():
            raise interrupts.Interrupted("stopped during a retry backoff; the request was not sent again")

    return backoff


def retry_policy(
    max_attempts: int,
    *,
    sleep: Sleep = asyncio.sleep,
    backoff_s: float = BACKOFF_S,
    max_backoff_s: float = MAX_BACKOFF_S,
) -> AsyncRetrying:
    """The one retry policy for OpenRouter requests (copy it per call: it holds state); a stop
    request ends it: after a failed attempt, or at the end of the backoff it was sleeping."""
    return AsyncRetrying(
        retry=RETRY_ON,
        wait=wait_retry_after(wait_random_exponential(multiplier=backoff_s, max=max_backoff_s)),
        stop=stop_after_attempt(max(1, max_attempts)) | _stop_requested,
        sleep=_backoff_unless_stopped(sleep),
        reraise=True,
        before_sleep=_log_retry,
    )


# ─── error mapping ──────────────────────────────────────────────────────────────────────


def api_message(response: httpx.Response) -> str:
    """The human message of an OpenRouter error body (``{"error": {"message": …}}``)."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        text = response.text.strip().replace("\n", " ")
        return text[:300] or response.reason_phrase or "no message"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message") or "").strip()
        meta = error.get("metadata")
        raw = meta.get("raw") if isinstance(meta, dict) else None
        if raw and isinstance(raw, str) and raw not in message:
            message = f"{message} ({raw[:200]})" if message else raw[:200]
        return message or response.reason_phrase or "no message"
    if isinstance(error, str):
        return error
    return json.dumps(body)[:300]


def error_for_status(
    status: int, message: str, *, retry_after: float | None = None, what: str = "request"
) -> EngineError:
    """The voxflow error for a non-2xx answer (the reference's error table)."""
    text = f"OpenRouter {status} for {what}: {message}"
    if status == 429:
        return RateLimited(text, retry_after=retry_after)
    if status == 408:
        return EngineTimeout(text, retry_after=retry_after)
    if status == 401:
        return AuthError(f"{text} — check OPENROUTER_API_KEY")
    if status == 402:
        return OutOfCredits(f"{text} — add credits at OpenRouter, then rerun")
    if status == 404:
        return UnknownModel(text)
    if status >= 500:
        return EngineUnavailable(text, retry_after=retry_after)
    return RequestRejected(text, status=status)  # 400, 403, 413 and any other 4xx


def json_object(response: httpx.Response) -> dict[str, Any]:
    """A 2xx body as a JSON object; a cut-short body is a transient BadResponse."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise BadResponse(
            f"OpenRouter answered {response.status_code} with a body that is not JSON "
            f"({len(response.content)} bytes; {exc.__class__.__name__})",
            transient=True,
        ) from None
    if not isinstance(body, dict):
        raise BadResponse("OpenRouter answered with JSON that is not an object", transient=False)
    return body


# ─── the client ─────────────────────────────────────────────────────────────────────────


class OpenRouterClient:
    """Headers, per-event-loop httpx clients, the retry policy and the error mapping.

    An engine may be shared by threads that each run their own event loop (Prefect task
    threads); an ``httpx.AsyncClient`` belongs to one loop, so there is one per loop.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        limiter: RequestLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        max_attempts: int | None = None,
    ) -> None:
        conf = settings.openrouter
        self.base_url = conf.base_url.rstrip("/")
        # The key stays a SecretStr inside an httpx.Auth: no frame local or argument holds it
        # as plain text, so tracebacks that print locals cannot show it.
        self._secret = conf.api_key if conf.api_key and conf.api_key.get_secret_value() else None
        self._auth = _Bearer(self._secret) if self._secret else None
        self._headers = {"User-Agent": "voxflow"}
        if conf.app_url:
            self._headers["HTTP-Referer"] = conf.app_url
        if conf.app_title:
            self._headers["X-OpenRouter-Title"] = conf.app_title
        self.timeout_s = settings.request_timeout_s
        self.max_attempts = max_attempts or settings.max_attempts
        self.limiter = limiter
        self.transport = transport
        self.sleep = sleep
        self._retrying = retry_policy(self.max_attempts, sleep=sleep, backoff_s=settings.retry_backoff_s)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]
        self._clients = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"OpenRouterClient(base_url={self.base_url!r})"

    @property
    def has_key(self) -> bool:
        return self._secret is not None

    def redact(self, text: str) -> str:
        return redact(text, self._secret.get_secret_value() if self._secret else None)

    def _client(self) -> httpx.AsyncClient:
        """This event loop's client (each recording runs in its own loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None or client.is_closed:
                client = httpx.AsyncClient(
                    transport=self.transport,
                    timeout=httpx.Timeout(self.timeout_s, connect=min(30.0, self.timeout_s)),
                    limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
                    follow_redirects=False,
                    verify=_tls_context(),
                )
                self._clients[loop] = client
            return client

    async def aclose(self) -> None:
        """Close this event loop's connection pool."""
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()

    def _count(self) -> None:
        with self._lock:
            self.requests_sent += 1
        counter = _request_count.get()
        if counter is not None:
            counter.add()

    async def call(
        self,
        method: str,
        path: str,
        parse: Callable[[httpx.Response], T],
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
        accept: str = "application/json",
        what: str = "request",
        need_key: bool = True,
        gated: bool = True,
    ) -> T:
        """One API call with retries; ``parse`` turns a 2xx response into the result.

        ``gated`` calls hold a limiter slot per attempt and report 429s/successes to it.
        """
        if need_key and self._secret is None:
            raise AuthError("OPENROUTER_API_KEY is not set: export it, or use a local/… model")
        headers = dict(self._headers)
        headers["Accept"] = accept
        content = None
        if body is not None:
            content = json.dumps(body, separators=(",", ":")).encode()  # encoded once
            headers["Content-Type"] = "application/json"
        request = (method, self.base_url + path, headers, content, params)
        limiter = self.limiter if gated else None
        retrying = self._retrying.copy()
        return await retrying(self._attempt, request, parse, what, limiter)

    async def _attempt(
        self,
        request: tuple[str, str, dict[str, str], bytes | None, Mapping[str, str] | None],
        parse: Callable[[httpx.Response], T],
        what: str,
        limiter: RequestLimiter | None,
    ) -> T:
        method, url, headers, content, params = request
        async with limiter.slot() if limiter is not None else contextlib.nullcontext():
            self._count()
            response = await self._send(method, url, headers, content, params, what)
        if response.is_success:
            try:
                result = parse(response)
            except BadResponse as exc:
                message = self.redact(f"{exc} ({what})")
                raise BadResponse(message, transient=_is_truncated(exc)) from None
            if limiter is not None:
                limiter.succeeded()
            return result
        error = error_for_status(
            response.status_code,
            self.redact(api_message(response)),
            retry_after=parse_retry_after(response.headers.get("retry-after")),
            what=what,
        )
        if isinstance(error, RateLimited) and limiter is not None:
            limiter.rate_limited(error.retry_after)
        raise error

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes | None,
        params: Mapping[str, str] | None,
        what: str,
    ) -> httpx.Response:
        client = self._client()
        try:
            async with asyncio.timeout(self.timeout_s):
                return await client.request(
                    method, url, headers=headers, content=content, params=params, auth=self._auth
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise EngineTimeout(
                f"OpenRouter {what}: no answer within {self.timeout_s:g} s ({type(exc).__name__})"
            ) from None
        except httpx.UnsupportedProtocol as exc:
            message = self.redact(f"bad OpenRouter base URL {self.base_url!r}: {exc}")
            raise ConfigError(message) from None
        except httpx.TransportError as exc:
            reason = self.redact(str(exc) or type(exc).__name__)
            raise EngineUnavailable(f"OpenRouter {what}: connection failed ({reason})") from None


class _Bearer(httpx.Auth):
    """``Authorization: Bearer …`` added to each request at the last moment."""

    def __init__(self, secret: SecretStr) -> None:
        self._secret = secret

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = "Bearer " + self._secret.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return "_Bearer(***)"


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context per process: loading the CA bundle costs ≈ 50 ms of CPU, which every
    recording's client (one per event loop) would otherwise pay again."""
    return httpx.create_ssl_context()
