"""OpenRouter speech engines — the only module that talks HTTP to OpenRouter.

Shape::

    OpenRouterTranscriber ─┐                       ┌─ POST /audio/transcriptions (JSON + base64)
    OpenRouterSynthesizer ─┼─ OpenRouterClient ────┼─ POST /audio/speech         (raw audio back)
    list_models()         ─┤   headers, timeouts,  ├─ GET  /models?output_modalities=…
    validate_model()      ─┘   one retry policy,   └─ GET  /key                  (is the key good?)
                               error mapping

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

A shared :class:`~voxflow.limits.RequestLimiter` (``engine.limiter``) gates every attempt —
a slot is held only while a request is on the wire, never during a backoff sleep — and hears
``rate_limited(retry_after)`` on each 429 and ``succeeded()`` on each 2xx.

The API key lives only in the ``Authorization`` header: :func:`redact` scrubs it (and anything
that looks like an OpenRouter key or a bearer token) from every message we raise or log, and
the engines' ``repr`` never shows it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import io
import json
import logging
import math
import re
import threading
import time
import wave
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

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

from voxflow.engines.base import SpeechAudio, SynthesisOptions, TranscribeOptions
from voxflow.errors import (
    AudioError,
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
from voxflow.models import AudioChunk, Segment, Transcript, Word, language_code

if TYPE_CHECKING:
    from voxflow.limits import RequestLimiter
    from voxflow.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
Kind = Literal["transcription", "speech"]
Sleep = Callable[[float], Awaitable[Any]]

DEFAULT_MAX_BODY_BYTES = 25 * 1024 * 1024  # the documented upload limit
BODY_OVERHEAD_BYTES = 4096  # JSON fields around the base64 audio
MAX_RETRY_AFTER_S = 300.0  # a longer Retry-After is capped: the batch keeps moving
BACKOFF_S = 1.0  # full-jitter window: 1, 2, 4, 8 … s
MAX_BACKOFF_S = 60.0
PCM_DEFAULT_RATE = 24_000  # OpenAI-style pcm when Content-Type names no rate
MP3_DECODE_RATE = 24_000

# Pricing is published per token (USD strings). For estimates, voxflow assumes this many
# audio tokens per second of speech (what the emulator bills by too), this many text tokens
# per second of speech, 4 characters per text token, 15 spoken characters per second.
AUDIO_TOKENS_PER_SECOND = 10.0
TEXT_TOKENS_PER_SECOND = 3.0
CHARS_PER_TOKEN = 4.0
SPOKEN_CHARS_PER_SECOND = 15.0

# Models that answer text only or refuse verbose_json: ask them for plain json from the start.
# Any other model that refuses verbose_json with a 400 is learnt at run time (see
# OpenRouterTranscriber.transcribe).
TEXT_ONLY_MODELS = frozenset({"google/chirp-3", "openai/gpt-4o-transcribe", "openai/gpt-4o-mini-transcribe"})
# Longest input text per request, by model-id prefix (first match wins); OpenAI documents 4096.
TTS_INPUT_LIMITS: tuple[tuple[str, int], ...] = (
    ("openai/", 4096),
    ("google/", 4000),
    ("mistralai/", 4000),
    ("elevenlabs/", 5000),
    ("fish-audio/", 4000),
)
DEFAULT_TTS_INPUT_LIMIT = 4096

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
        advised = getattr(exc, "retry_after", None)
        if advised is not None:
            wait = max(wait, min(float(advised), self.cap))
        return wait


def _is_truncated(exc: BaseException) -> bool:
    return isinstance(exc, BadResponse) and getattr(exc, "transient", False)


RETRY_ON = retry_if_exception_type(TransientEngineError) | retry_if_exception(_is_truncated)


def _log_retry(retry_state: RetryCallState) -> None:
    outcome = retry_state.outcome
    exc = outcome.exception() if outcome is not None else None
    wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
    # messages are redacted where they are raised
    log.warning("%s; retry %d in %.1f s", exc, retry_state.attempt_number, wait)


def retry_policy(
    max_attempts: int,
    *,
    sleep: Sleep = asyncio.sleep,
    backoff_s: float = BACKOFF_S,
    max_backoff_s: float = MAX_BACKOFF_S,
) -> AsyncRetrying:
    """The one retry policy for OpenRouter requests (copy it per call: it holds state)."""
    return AsyncRetrying(
        retry=RETRY_ON,
        wait=wait_retry_after(wait_random_exponential(multiplier=backoff_s, max=max_backoff_s)),
        stop=stop_after_attempt(max(1, max_attempts)),
        sleep=sleep,
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
        error: EngineError = EngineTimeout(text)
    elif status == 401:
        return AuthError(f"{text} — check OPENROUTER_API_KEY")
    elif status == 402:
        return OutOfCredits(f"{text} — add credits at OpenRouter, then rerun")
    elif status == 404:
        return UnknownModel(text)
    elif status >= 500:
        error = EngineUnavailable(text)
    else:  # 400, 403, 413 and any other 4xx
        return RequestRejected(text, status=status)
    error.retry_after = retry_after  # type: ignore[attr-defined]  # honoured by the wait
    return error


def _bad_response(message: str, *, transient: bool) -> BadResponse:
    error = BadResponse(message)
    error.transient = transient  # type: ignore[attr-defined]
    return error


def json_object(response: httpx.Response) -> dict[str, Any]:
    """A 2xx body as a JSON object; a cut-short body is a transient BadResponse."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise _bad_response(
            f"OpenRouter answered {response.status_code} with a body that is not JSON "
            f"({len(response.content)} bytes; {exc.__class__.__name__})",
            transient=True,
        ) from None
    if not isinstance(body, dict):
        raise _bad_response("OpenRouter answered with JSON that is not an object", transient=False)
    return body


# ─── the HTTP client ────────────────────────────────────────────────────────────────────


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
        self._transport = transport
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
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None or client.is_closed:
                client = httpx.AsyncClient(
                    transport=self._transport,
                    timeout=httpx.Timeout(self.timeout_s, connect=min(30.0, self.timeout_s)),
                    limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
                    follow_redirects=False,
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
        async with limiter.slot() if limiter is not None else _no_slot():
            self._count()
            response = await self._send(method, url, headers, content, params, what)
        if response.is_success:
            try:
                result = parse(response)
            except BadResponse as exc:
                message = self.redact(f"{exc} ({what})")
                raise _bad_response(message, transient=_is_truncated(exc)) from None
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


@contextlib.asynccontextmanager
async def _no_slot() -> AsyncIterator[None]:
    yield


class _Bearer(httpx.Auth):
    """``Authorization: Bearer …`` added to each request at the last moment."""

    def __init__(self, secret: SecretStr) -> None:
        self._secret = secret

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = "Bearer " + self._secret.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return "_Bearer(***)"


# ─── speech to text ─────────────────────────────────────────────────────────────────────


class _Engine:
    """What both OpenRouter engines share: the client, its limiter hook, a safe repr."""

    kind: Kind  # the modality, as GET /models names it
    model: str
    settings: Settings
    client: OpenRouterClient
    pricing: dict[str, Any] | None
    _pricing_tried: bool

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.client.base_url!r})"

    @property
    def limiter(self) -> RequestLimiter | None:
        return self.client.limiter

    @limiter.setter
    def limiter(self, value: RequestLimiter | None) -> None:
        self.client.limiter = value

    @property
    def requests_sent(self) -> int:
        """HTTP requests sent by this engine so far (first tries and retries)."""
        return self.client.requests_sent

    async def prepare(self) -> dict[str, Any]:
        """Check key, model (and voice) before a batch; keeps the model's pricing for estimates."""
        info = await validate_model(
            self.settings,
            self.model,
            self.kind,
            getattr(self, "voice", None),
            transport=self.client._transport,
            sleep=self.client.sleep,
        )
        self.pricing = info.get("pricing") or None
        self._pricing_tried = True
        return info

    async def load_pricing(self) -> dict[str, Any] | None:
        """The model's pricing from ``/models`` (once; None if unlisted or unreachable)."""
        if not self._pricing_tried:
            self._pricing_tried = True
            client = self.client
            self.pricing = await _model_pricing(self.settings, self.model, self.kind, client._transport, client.sleep)
        return self.pricing


class OpenRouterTranscriber(_Engine):
    """Speech to text through ``POST /audio/transcriptions`` (JSON with base64 audio).

    Asks for ``verbose_json`` with segment and word times unless the model is known to
    answer text only (``TEXT_ONLY_MODELS``) or refuses it with a 400 — then it falls back to
    plain ``json`` for the rest of the run and returns ``Transcript(timed=False)``.
    """

    kind = "transcription"
    upload_format = "flac"
    max_chunk_s = 600.0

    def __init__(
        self,
        model: str,
        settings: Settings,
        *,
        limiter: RequestLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        provider: Mapping[str, Any] | None = None,
        verbose: bool | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        pricing: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.provider = dict(provider) if provider else None
        self.verbose = (model not in TEXT_ONLY_MODELS) if verbose is None else verbose
        self.max_body_bytes = max_body_bytes
        self.pricing: dict[str, Any] | None = dict(pricing) if pricing else None
        self._pricing_tried = pricing is not None
        self.client = OpenRouterClient(settings, limiter=limiter, transport=transport, sleep=sleep)

    def max_upload_bytes(self) -> int:
        """Largest encoded chunk that keeps the base64 JSON body under ``max_body_bytes``."""
        return (self.max_body_bytes - BODY_OVERHEAD_BYTES) * 3 // 4

    def estimate_cost(self, duration_ms: int) -> float:
        """USD this model would charge for ``duration_ms`` of audio (0.0 if pricing unknown)."""
        if not self.pricing:
            return 0.0
        seconds = max(0, duration_ms) / 1000
        audio = _price(self.pricing, "audio") or _price(self.pricing, "prompt")
        per_second = AUDIO_TOKENS_PER_SECOND * audio
        per_second += TEXT_TOKENS_PER_SECOND * _price(self.pricing, "completion")
        return seconds * per_second + _price(self.pricing, "request")

    def _payload(self, data_b64: str, fmt: str, options: TranscribeOptions, verbose: bool) -> dict:
        payload: dict[str, Any] = {
            "model": self.model,
            "input_audio": {"data": data_b64, "format": fmt},
        }
        if options.language:
            payload["language"] = options.language
        if verbose:
            payload["response_format"] = "verbose_json"
            payload["timestamp_granularities"] = ["segment", "word"]
        else:
            payload["response_format"] = "json"
        if options.temperature is not None:
            payload["temperature"] = options.temperature
        if options.diarize:
            payload["diarize"] = True
        if options.keyterms:
            payload["keyterms"] = list(options.keyterms)
        if self.provider:
            payload["provider"] = self.provider
        return payload

    async def transcribe(self, chunk: AudioChunk, options: TranscribeOptions) -> Transcript:
        """What was said in ``chunk`` (times relative to its start)."""
        data_b64 = base64.b64encode(chunk.data).decode("ascii")
        what = f"{self.model} chunk {chunk.index}"
        if len(data_b64) + BODY_OVERHEAD_BYTES > self.max_body_bytes:
            raise RequestRejected(
                f"{what}: {len(chunk.data)} bytes of {chunk.format} is over the "
                f"{self.max_body_bytes}-byte request limit once base64-encoded; split it",
                status=413,
            )
        verbose = self.verbose or options.diarize
        call = self.client.call
        path = "/audio/transcriptions"
        try:
            body = self._payload(data_b64, chunk.format, options, verbose)
            data = await call("POST", path, json_object, body=body, what=what)
        except RequestRejected as exc:
            if not (exc.status == 400 and verbose and not options.diarize and _refuses(exc)):
                raise
            log.info("%s refuses verbose_json; asking for plain json from now on", self.model)
            self.verbose = False
            body = self._payload(data_b64, chunk.format, options, False)
            data = await call("POST", path, json_object, body=body, what=what)
        transcript = parse_transcript(data, chunk.duration_ms, language=options.language)
        if "cost" not in (data.get("usage") or {}):
            await self.load_pricing()
            transcript = _with_cost(transcript, self.estimate_cost(chunk.duration_ms))
        return transcript

    async def aclose(self) -> None:
        await self.client.aclose()


def _refuses(exc: RequestRejected) -> bool:
    text = str(exc).lower()
    return any(k in text for k in ("verbose_json", "response_format", "timestamp_granularit"))


def _with_cost(t: Transcript, cost: float) -> Transcript:
    return Transcript(t.text, t.language, t.segments, cost, t.timed)


def _price(pricing: Mapping[str, Any], key: str) -> float:
    try:
        value = float(pricing.get(key) or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def _ms(seconds: Any) -> int:
    value = float(seconds)
    if not math.isfinite(value):
        raise ValueError("time is not finite")
    return max(0, round(value * 1000))


def _speaker(item: Mapping[str, Any]) -> str | None:
    label = item.get("speaker_label")
    if isinstance(label, str) and label.strip():
        return label.strip()
    number = item.get("speaker")
    if number is None or number == "":
        return None
    return number if isinstance(number, str) else f"speaker_{number}"


def parse_transcript(data: Mapping[str, Any], duration_ms: int = 0, *, language: str | None = None) -> Transcript:
    """A Transcript from a ``json``/``verbose_json`` answer; times clamped to ``duration_ms``.

    Words are placed in the segment that holds their midpoint; words without segments are
    grouped into sentences; no segments and no words → ``timed=False`` (text only).
    """
    text = data.get("text")
    if not isinstance(text, str):
        raise _bad_response("OpenRouter answered without a 'text' field", transient=False)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    try:
        cost = float(usage.get("cost") or 0.0)
        words = _parse_words(data.get("words") or [], duration_ms)
        segments = _parse_segments(data.get("segments") or [], words, duration_ms)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        message = f"OpenRouter answered with malformed timings ({exc})"
        raise _bad_response(message, transient=False) from None
    heard = language_code(data.get("language"))
    lang = heard if heard != "und" else language_code(language)
    return Transcript(
        text=text.strip(),
        language=lang,
        segments=tuple(segments),
        cost_usd=cost if math.isfinite(cost) and cost > 0 else 0.0,
        timed=bool(segments),
    )


def _clamp(start: int, end: int, duration_ms: int) -> tuple[int, int]:
    if duration_ms > 0:
        start, end = min(start, duration_ms), min(end, duration_ms)
    return start, max(start, end)


def _parse_words(raw: Sequence[Any], duration_ms: int) -> list[Word]:
    words = []
    for item in raw:
        if not isinstance(item, dict) or item.get("type", "word") != "word":
            continue  # audio events ("(laughter)") are not words
        token = str(item.get("word", "")).strip()
        if not token:
            continue
        start, end = _clamp(_ms(item["start"]), _ms(item["end"]), duration_ms)
        conf = item.get("confidence")
        words.append(Word(start, end, token, float(conf) if conf is not None else None, _speaker(item)))
    words.sort(key=lambda w: (w.start_ms, w.end_ms))
    return words


def _parse_segments(raw: Sequence[Any], words: list[Word], duration_ms: int) -> list[Segment]:
    if not raw:
        return _segments_from_words(words)
    spans = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        start, end = _clamp(_ms(item["start"]), _ms(item["end"]), duration_ms)
        logprob = item.get("avg_logprob")
        conf = round(math.exp(float(logprob)), 4) if logprob is not None else None
        spans.append((start, end, str(item.get("text", "")).strip(), _speaker(item), conf))
    spans.sort(key=lambda s: (s[0], s[1]))
    buckets: list[list[Word]] = [[] for _ in spans]
    for w in words:  # each word goes to the segment holding its midpoint (else the nearest)
        mid = (w.start_ms + w.end_ms) / 2
        best = min(
            range(len(spans)),
            key=lambda i: 0 if spans[i][0] <= mid <= spans[i][1] else
            min(abs(spans[i][0] - mid), abs(spans[i][1] - mid)),
        )  # fmt: skip
        buckets[best].append(w)
    segments = []
    for (start, end, text, speaker, conf), seg_words in zip(spans, buckets, strict=True):
        if not text and not seg_words:
            continue
        if speaker is None:
            speaker = _majority([w.speaker for w in seg_words])
        segments.append(
            Segment(
                start_ms=start,
                end_ms=end,
                text=text or " ".join(w.word for w in seg_words),
                words=tuple(seg_words),
                speaker=speaker,
                confidence=conf,
            )
        )
    return segments


def _majority(values: Sequence[str | None]) -> str | None:
    present = [v for v in values if v]
    return max(set(present), key=present.count) if present else None


_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’)\]]*$")
_GAP_MS = 1500


def _segments_from_words(words: list[Word]) -> list[Segment]:
    """Sentence segments from words alone: cut at . ! ?, a speaker change or a long gap."""
    segments: list[Segment] = []
    current: list[Word] = []
    for w in words:
        if current and ((w.speaker != current[-1].speaker) or w.start_ms - current[-1].end_ms > _GAP_MS):
            segments.append(_segment_of(current))
            current = []
        current.append(w)
        if _SENTENCE_END.search(w.word):
            segments.append(_segment_of(current))
            current = []
    if current:
        segments.append(_segment_of(current))
    return segments


def _segment_of(words: list[Word]) -> Segment:
    return Segment(
        start_ms=words[0].start_ms,
        end_ms=max(w.end_ms for w in words),
        text=" ".join(w.word for w in words),
        words=tuple(words),
        speaker=_majority([w.speaker for w in words]),
    )


# ─── text to speech ─────────────────────────────────────────────────────────────────────


def tts_input_limit(model: str) -> int:
    for prefix, limit in TTS_INPUT_LIMITS:
        if model.startswith(prefix):
            return limit
    return DEFAULT_TTS_INPUT_LIMIT


def parse_audio_type(content_type: str) -> tuple[str, dict[str, str]]:
    """``audio/pcm;rate=24000;channels=1`` → (``audio/pcm``, {"rate": "24000", …})."""
    main, *rest = (part.strip() for part in content_type.split(";"))
    params = {}
    for part in rest:
        key, _, value = part.partition("=")
        if key:
            params[key.strip().lower()] = value.strip().strip('"')
    return main.lower(), params


class _RawAudio:
    """A 2xx speech answer: bytes plus the headers we keep."""

    __slots__ = ("content", "content_type", "cost", "generation_id")

    def __init__(self, response: httpx.Response) -> None:
        self.content = response.content
        self.content_type = response.headers.get("content-type", "")
        self.generation_id = response.headers.get("x-generation-id")
        cost = response.headers.get("x-openrouter-cost")
        try:
            self.cost = float(cost) if cost is not None else None
        except ValueError:
            self.cost = None


def _speech_response(response: httpx.Response) -> _RawAudio:
    raw = _RawAudio(response)
    kind, _ = parse_audio_type(raw.content_type)
    if not raw.content:
        raise _bad_response("OpenRouter answered with empty audio", transient=True)
    if not kind.startswith("audio/"):
        # A 200 that is not audio (an HTML error page, a JSON error) comes from a flaky edge.
        message = f"OpenRouter answered {kind or 'no content type'}, not audio"
        raise _bad_response(message, transient=True)
    if kind in ("audio/pcm", "audio/l16", "audio/raw") and len(raw.content) % 2:
        raise _bad_response("OpenRouter answered with PCM cut mid-sample", transient=True)
    return raw


def decode_audio(data: bytes, *, rate: int = MP3_DECODE_RATE) -> bytes:
    """mp3 (or any container ffmpeg reads) → mono s16le PCM at ``rate`` (voxflow.media)."""
    from voxflow.media import decode_to_pcm

    try:
        return decode_to_pcm(data, "mp3", sample_rate=rate)
    except AudioError as exc:
        raise AudioError(f"cannot decode speech audio: {exc}") from exc


async def speech_audio(raw: _RawAudio) -> tuple[bytes, int, int]:
    """(pcm, rate, channels) from a speech answer of any supported content type."""
    kind, params = parse_audio_type(raw.content_type)
    if kind in ("audio/pcm", "audio/l16", "audio/raw"):
        rate = int(params.get("rate") or params.get("sample_rate") or PCM_DEFAULT_RATE)
        channels = int(params.get("channels") or 1)
        pcm = raw.content
        if kind == "audio/l16":  # RFC 2586: big-endian samples
            pcm = bytes(b for pair in zip(pcm[1::2], pcm[0::2], strict=True) for b in pair)
        return pcm, rate, channels
    if kind in ("audio/wav", "audio/x-wav", "audio/wave"):
        try:
            with wave.open(io.BytesIO(raw.content), "rb") as wav:
                if wav.getsampwidth() == 2:
                    frames = wav.readframes(wav.getnframes())
                    return frames, wav.getframerate(), wav.getnchannels()
        except (wave.Error, EOFError):
            pass
    try:
        pcm = await asyncio.to_thread(decode_audio, raw.content)
    except AudioError as exc:
        raise BadResponse(f"OpenRouter speech audio ({kind}): {exc}") from None
    return pcm, MP3_DECODE_RATE, 1


class OpenRouterSynthesizer(_Engine):
    """Text to speech through ``POST /audio/speech``; asks for lossless ``pcm``."""

    kind = "speech"

    def __init__(
        self,
        model: str,
        settings: Settings,
        *,
        voice: str | None = None,
        response_format: Literal["pcm", "mp3"] = "pcm",
        max_input_chars: int | None = None,
        limiter: RequestLimiter | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        provider: Mapping[str, Any] | None = None,
        pricing: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.settings = settings
        self.voice = voice if voice is not None else settings.voice
        self.response_format = response_format
        self.max_input_chars = max_input_chars or tts_input_limit(model)
        self.provider = dict(provider) if provider else None
        self.pricing: dict[str, Any] | None = dict(pricing) if pricing else None
        self._pricing_tried = pricing is not None
        self.client = OpenRouterClient(settings, limiter=limiter, transport=transport, sleep=sleep)

    def estimate_cost(self, chars: int) -> float:
        """USD for speaking ``chars`` characters (0.0 if pricing unknown)."""
        if not self.pricing:
            return 0.0
        tokens_in = math.ceil(max(0, chars) / CHARS_PER_TOKEN)
        seconds = max(0, chars) / SPOKEN_CHARS_PER_SECOND
        return (
            tokens_in * _price(self.pricing, "prompt")
            + seconds * AUDIO_TOKENS_PER_SECOND * _price(self.pricing, "audio_output")
            + _price(self.pricing, "request")
        )

    async def synthesise(self, text: str, options: SynthesisOptions) -> SpeechAudio:
        """Speech for ``text`` as s16le PCM (rate from the answer's Content-Type)."""
        if not text.strip():
            raise RequestRejected("nothing to speak: the text is empty", status=400)
        if len(text) > self.max_input_chars:
            raise RequestRejected(
                f"{self.model} takes at most {self.max_input_chars} characters per request, "
                f"got {len(text)}; split the text",
                status=413,
            )
        body: dict[str, Any] = {
            "model": self.model,
            "input": text,
            "response_format": self.response_format,
        }
        voice = options.voice or self.voice
        if voice:
            body["voice"] = voice
        if options.instructions:
            body["instructions"] = options.instructions
        if options.speed is not None and options.speed != 1.0:
            body["speed"] = options.speed
        if self.provider:
            body["provider"] = self.provider
        raw = await self.client.call(
            "POST",
            "/audio/speech",
            _speech_response,
            body=body,
            accept="audio/*",
            what=f"{self.model} speech ({len(text)} chars)",
        )
        pcm, rate, channels = await speech_audio(raw)
        if raw.cost is None:
            await self.load_pricing()
        cost = raw.cost if raw.cost is not None else self.estimate_cost(len(text))
        return SpeechAudio(
            pcm=pcm,
            sample_rate=rate,
            channels=channels,
            cost_usd=cost,
            generation_id=raw.generation_id,
        )

    async def aclose(self) -> None:
        await self.client.aclose()


# ─── model metadata ─────────────────────────────────────────────────────────────────────


async def list_models(
    settings: Settings,
    kind: Kind,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    sleep: Sleep = asyncio.sleep,
) -> list[dict[str, Any]]:
    """``GET /models?output_modalities=kind``: the STT or TTS models with pricing and voices."""
    client = OpenRouterClient(settings, transport=transport, sleep=sleep)
    try:
        body = await client.call(
            "GET",
            "/models",
            json_object,
            params={"output_modalities": kind},
            what=f"{kind} model list",
            need_key=False,
        )
    finally:
        await client.aclose()
    models = body.get("data")
    if not isinstance(models, list):
        raise BadResponse("OpenRouter's model list has no 'data' array")
    return [m for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)]


async def _model_pricing(
    settings: Settings,
    model: str,
    kind: Kind,
    transport: httpx.AsyncBaseTransport | None,
    sleep: Sleep,
) -> dict[str, Any] | None:
    try:
        models = await list_models(settings, kind, transport, sleep=sleep)
    except EngineError as exc:
        log.info("no pricing for %s: %s", model, exc)
        return None
    found = next((m for m in models if m.get("id") == model), None)
    pricing = found.get("pricing") if found else None
    return pricing if isinstance(pricing, dict) else None


async def check_key(
    settings: Settings,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    sleep: Sleep = asyncio.sleep,
) -> dict[str, Any]:
    """``GET /key``: AuthError unless the key is set and accepted; returns the key's data."""
    client = OpenRouterClient(settings, transport=transport, sleep=sleep)
    try:
        body = await client.call("GET", "/key", json_object, what="key check")
    finally:
        await client.aclose()
    data = body.get("data")
    return data if isinstance(data, dict) else {}


async def validate_model(
    settings: Settings,
    model: str,
    kind: Kind,
    voice: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    sleep: Sleep = asyncio.sleep,
) -> dict[str, Any]:
    """The model's metadata, after checking the key, the model id and (TTS) the voice.

    AuthError: no key, or the key is refused. UnknownModel: ``model`` is not a ``kind``
    model, or ``voice`` is not in its ``supported_voices``.
    """
    await check_key(settings, transport, sleep=sleep)
    models = await list_models(settings, kind, transport, sleep=sleep)
    found = next((m for m in models if model in (m.get("id"), m.get("canonical_slug"))), None)
    if found is None:
        known = ", ".join(sorted(m["id"] for m in models)[:12]) or "none"
        raise UnknownModel(f"{model!r} is not an OpenRouter {kind} model (known: {known})")
    voices = found.get("supported_voices")
    if kind == "speech" and voice and isinstance(voices, list) and voice not in voices:
        raise UnknownModel(f"voice {voice!r} is not offered by {model} (voices: {', '.join(map(str, voices))})")
    return found
