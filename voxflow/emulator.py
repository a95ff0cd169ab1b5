"""A local stand-in for OpenRouter's audio API, served over real HTTP on 127.0.0.1.

No machine here reaches the real service, so tests, benchmarks and demos talk to this
instead (``OPENROUTER_BASE_URL=http://127.0.0.1:PORT/api/v1``). It follows the reference
(shared/reference/openrouter-audio-api.md) and OpenRouter's SDK:

* ``POST /api/v1/audio/transcriptions`` — JSON with base64 ``input_audio``. The audio is
  decoded with ffmpeg to 16 kHz PCM and recognised by the embedded engine (faster-whisper),
  so the words are real; ``verbose_json`` adds segments and words with times. ``usage.cost``
  is billed from the audio's seconds (``AUDIO_TOKENS_PER_SECOND`` audio tokens a second at
  the model's ``pricing.audio``). Per model: text-only models (``google/chirp-3``) answer
  ``text`` alone, json-only models (``openai/gpt-4o-*-transcribe``) refuse ``verbose_json``
  with a 400, diarizing models label speakers (a fake diarizer: segments alternate between
  ``speaker_0`` and ``speaker_1``), keyterms are refused by models that do not take them.
* ``POST /api/v1/audio/speech`` — speech from the embedded Piper voice, whatever ``voice``
  is asked for (it must be one of the model's ``supported_voices``): ``pcm`` answers
  ``Content-Type: audio/pcm;rate=22050;channels=1``, ``mp3`` is encoded with ffmpeg;
  ``X-Generation-Id: gen-tts-…``.
* ``GET /api/v1/models?output_modalities=transcription|speech|all`` — ids, names, pricing
  (USD strings per token) and ``supported_voices``; ``GET /api/v1/key`` — the key's data.
* Errors are OpenRouter-shaped ``{"error": {"code", "message"}}``: 401 bad key, 404 unknown
  model, 400 bad request (bad base64, missing fields, unsupported format or option, diarize
  without verbose_json, text too long), 413 body over ``max_body_bytes``, 402 once
  ``credit_usd`` is spent.
* Faults: ``faults="429:0.1,500:0.05,slow:0.05,drop:0.02,malformed:0.02"`` — each audio
  request draws at most one (seeded): an HTTP status (429 carries ``Retry-After``), ``slow``
  (answers after ``slow_ms`` more), ``drop`` (the connection closes mid-answer) or
  ``malformed`` (200 with a truncated JSON body / an HTML page instead of audio).
* ``fast_text=True`` skips recognition: the text is a fixed word list walked by the audio's
  sha256 (about 2.5 words a second, evenly timed) — deterministic, for benchmarks that
  measure voxflow rather than Whisper. Real recognition is the default.
* ``GET /_emulator/log`` — one JSON record per request (time, endpoint, model, sha256 of the
  decoded audio or the input text, status, fault); ``POST /_emulator/reset`` clears it.
  Neither the log nor any answer ever contains an API key.

Use :func:`start_emulator_in_thread` in tests, :func:`serve` / :func:`run_emulator` from a
shell.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

log = logging.getLogger(__name__)

DEFAULT_KEY = "sk-or-v1-emulator-test-key-0000000000000000"
API_PREFIX = "/api/v1"
AUDIO_TOKENS_PER_SECOND = 10.0  # how audio is billed (voxflow's estimates assume the same)
INPUT_FORMATS = frozenset({"wav", "mp3", "flac", "m4a", "ogg", "webm", "aac", "pcm"})
FAULT_NAMES = frozenset({"slow", "drop", "malformed"})
PCM_RATE = 16_000


# ─── configuration ──────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class SttModel:
    """A speech-to-text model the emulator offers."""

    id: str
    name: str
    # "verbose": honours verbose_json; "text_only": accepts it, answers text only;
    # "json_only": 400 on verbose_json.
    timestamps: Literal["verbose", "text_only", "json_only"] = "verbose"
    diarize: bool = False
    keyterms: bool = False
    billing: Literal["seconds", "tokens"] = "seconds"  # what usage reports beside cost
    audio_price: float = 0.00001  # USD per audio token (10 a second → $0.006 a minute)
    completion_price: float = 0.0  # USD per output text token
    request_price: float = 0.0


@dataclass(frozen=True)
class TtsModel:
    """A text-to-speech model the emulator offers."""

    id: str
    name: str
    voices: tuple[str, ...]
    max_chars: int = 4096
    speed: bool = True  # False: 400 on a non-default speed
    instructions: bool = True
    prompt_price: float = 0.0000006  # USD per input text token
    audio_output_price: float = 0.000012  # USD per output audio token
    request_price: float = 0.0


_OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)
DEFAULT_STT_MODELS: tuple[SttModel, ...] = (
    SttModel("openai/whisper-large-v3", "OpenAI: Whisper Large v3"),
    SttModel("openai/whisper-1", "OpenAI: Whisper 1"),
    SttModel("nvidia/parakeet-tdt-0.6b-v3", "NVIDIA: Parakeet TDT 0.6B v3", audio_price=0.000005),
    SttModel(
        "google/chirp-3",
        "Google: Chirp 3",
        timestamps="text_only",
        keyterms=True,
        audio_price=0.0000267,
    ),
    SttModel(
        "openai/gpt-4o-transcribe",
        "OpenAI: GPT-4o Transcribe",
        timestamps="json_only",
        billing="tokens",
        audio_price=0.0000025,
        completion_price=0.00001,
    ),
    SttModel(
        "openai/gpt-4o-mini-transcribe",
        "OpenAI: GPT-4o Mini Transcribe",
        timestamps="json_only",
        billing="tokens",
        audio_price=0.00000125,
        completion_price=0.000005,
    ),
    SttModel(
        "elevenlabs/scribe-v1",
        "ElevenLabs: Scribe v1",
        diarize=True,
        keyterms=True,
        audio_price=0.0000067,
    ),
)
DEFAULT_TTS_MODELS: tuple[TtsModel, ...] = (
    TtsModel("openai/gpt-4o-mini-tts-2025-12-15", "OpenAI: GPT-4o mini TTS", _OPENAI_VOICES),
    TtsModel(
        "openai/tts-1",
        "OpenAI: TTS 1",
        _OPENAI_VOICES[:9],
        instructions=False,
        prompt_price=0.0,
        audio_output_price=0.0,
        request_price=0.0,
    ),
    TtsModel(
        "google/gemini-2.5-flash-preview-tts",
        "Google: Gemini 2.5 Flash Preview TTS",
        ("Kore", "Puck", "Zephyr", "Charon", "Fenrir", "Leda"),
        max_chars=4000,
        speed=False,
        prompt_price=0.0000005,
        audio_output_price=0.00001,
    ),
    TtsModel(
        "mistralai/voxtral-mini-tts",
        "Mistral: Voxtral Mini TTS",
        ("default", "narrator"),
        max_chars=4000,
        speed=False,
        instructions=False,
        prompt_price=0.0000004,
        audio_output_price=0.000008,
    ),
)


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator behaves; every field has a default that behaves like OpenRouter."""

    keys: tuple[str, ...] = (DEFAULT_KEY,)
    faults: str | None = None  # "429:0.1,500:0.05,slow:0.05,drop:0.02,malformed:0.02"
    retry_after: float = 1.0  # seconds, sent with fault 429s
    seed: int | None = 0  # for the fault draws; None = random
    latency_ms: int = 0  # added to every audio request (asyncio sleep)
    slow_ms: int = 3000  # added by a "slow" fault
    max_body_bytes: int = 25 * 1024 * 1024  # larger bodies → 413
    fast_text: bool = False  # skip recognition; text from the audio hash
    credit_usd: float | None = None  # 402 once this much is spent
    stt_models: tuple[SttModel, ...] = DEFAULT_STT_MODELS
    tts_models: tuple[TtsModel, ...] = DEFAULT_TTS_MODELS
    stt_engine: str = "local/tiny.en"
    tts_engine: str = "local/en_US-joe-medium"
    local_threads: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))
    workers: int = 32  # threads for ffmpeg and the engines

    def __post_init__(self) -> None:
        parse_faults(self.faults)  # fail early on a bad spec


def parse_faults(spec: str | None) -> dict[str, float]:
    """``"429:0.1,slow:0.05"`` → {"429": 0.1, "slow": 0.05}; probabilities must sum ≤ 1."""
    faults: dict[str, float] = {}
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition(":")
        name = name.strip().lower()
        try:
            p = float(value) if sep else math.nan
        except ValueError:
            p = math.nan
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"fault {part!r}: give NAME:PROBABILITY with 0 ≤ p ≤ 1")
        if name not in FAULT_NAMES and not (name.isdigit() and 400 <= int(name) <= 599):
            raise ValueError(f"unknown fault {name!r}: an HTTP status 400-599, slow, drop, malformed")
        faults[name] = faults.get(name, 0.0) + p
    if sum(faults.values()) > 1.0 + 1e-9:
        raise ValueError(f"fault probabilities add up to more than 1: {spec}")
    return faults


# ─── state ──────────────────────────────────────────────────────────────────────────────


class _Problem(Exception):
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


class EmulatorState:
    """Config, fault draws, spent credit and the request log of one emulator."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.faults = parse_faults(config.faults)
        self.stt = {m.id: m for m in config.stt_models}
        self.tts = {m.id: m for m in config.tts_models}
        self._random = random.Random(config.seed)
        self._lock = threading.Lock()
        self._log: list[dict[str, Any]] = []
        self._seq = 0
        self.spent_usd = 0.0
        self.executor: ThreadPoolExecutor | None = None

    def draw_fault(self) -> str | None:
        if not self.faults:
            return None
        with self._lock:
            x = self._random.random()
        for name, p in self.faults.items():
            if x < p:
                return name
            x -= p
        return None

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._log.append(entry)

    def log(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._log]

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self.spent_usd = 0.0

    def spend(self, cost: float) -> None:
        with self._lock:
            self.spent_usd += cost

    def credit_left(self) -> bool:
        credit = self.config.credit_usd
        return credit is None or self.spent_usd < credit


# ─── helpers ────────────────────────────────────────────────────────────────────────────


def _check_key(request: Request, state: EmulatorState) -> None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _Problem(401, "No auth credentials found")
    if token.strip() not in state.config.keys:
        raise _Problem(401, "User not found.")  # what OpenRouter says to an unknown key


async def _read_json(request: Request, limit: int) -> dict[str, Any]:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise _Problem(413, f"Request body too large: {int(length)} bytes, the limit is {limit}")
    chunks = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] != "http.request":
            raise _Problem(400, "the client went away before the body was sent")
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        request.state.body_done = not more
        size += len(chunk)
        if size > limit:
            raise _Problem(413, f"Request body too large: over the {limit}-byte limit")
        chunks.append(chunk)
        if not more:
            break
    return _parse_json_object(b"".join(chunks))


def _parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400: malformed, too deeply nested, an integer past
    Python's digit limit, not UTF-8, or with strings that are not valid Unicode."""
    try:
        body = json.loads(raw)
        json.dumps(body, ensure_ascii=False).encode()  # unpaired surrogate escapes ("\ud800")
    except RecursionError:
        raise _Problem(400, "Invalid JSON in request body: nested too deeply") from None
    except (ValueError, UnicodeError):  # JSONDecodeError, UnicodeDecodeError, int digit limit
        raise _Problem(400, "Invalid JSON in request body") from None
    if not isinstance(body, dict):
        raise _Problem(400, "Request body must be a JSON object")
    return body


async def _drain(request: Request, cap: int = 256 * 1024 * 1024) -> None:
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


def _price_str(value: float) -> str:
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_to_pcm(data: bytes, fmt: str) -> bytes:
    """Any supported upload → 16 kHz mono s16le (voxflow.media); ValueError if it does not decode."""
    from voxflow.errors import AudioError
    from voxflow.media import decode_to_pcm as decode

    try:
        return decode(data, fmt, sample_rate=PCM_RATE)
    except AudioError as exc:
        raise ValueError(str(exc)[:200]) from None


_FAKE_TEXT = (
    "the quick brown fox jumps over a lazy dog while seven bright stars watch from above "
    "and river stones remember every quiet song of morning rain across the open field"
)
_FAKE_WORDS = tuple(_FAKE_TEXT.split())


def fake_transcript(digest: str, duration_ms: int) -> list[dict[str, Any]]:
    """``fast_text`` segments: words walked from ``_FAKE_WORDS`` by the hash, evenly timed."""
    n = max(1, round(duration_ms / 400)) if duration_ms >= 200 else 0
    seed = bytes.fromhex(digest)
    words = [_FAKE_WORDS[seed[i % len(seed)] % len(_FAKE_WORDS)] for i in range(n)]
    step = duration_ms / max(1, n)
    segments = []
    for start in range(0, n, 12):  # a sentence every 12 words
        chunk = words[start : start + 12]
        chunk_words = [
            {
                "word": w,
                "start": round((start + i) * step / 1000, 3),
                "end": round((start + i + 0.8) * step / 1000, 3),
                "probability": 0.99,
            }
            for i, w in enumerate(chunk)
        ]
        chunk_words[-1]["word"] += "."
        segments.append(
            {
                "start": chunk_words[0]["start"],
                "end": chunk_words[-1]["end"],
                "text": " ".join(w["word"] for w in chunk_words),
                "words": chunk_words,
                "avg_logprob": -0.1,
                "no_speech_prob": 0.01,
            }
        )
    return segments


def _language_name(code: str) -> str:
    names = {
        "en": "english",
        "de": "german",
        "fr": "french",
        "es": "spanish",
        "it": "italian",
        "ja": "japanese",
        "zh": "chinese",
        "nl": "dutch",
        "pt": "portuguese",
    }
    return names.get(code, code)


class _Dropped(Response):
    """Starts a 200 answer, sends part of it and closes the connection (a dropped socket)."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"text": "', "more_body": True})
        # returning now makes the server close the connection mid-body


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


# ─── the app ────────────────────────────────────────────────────────────────────────────


def create_app(config: EmulatorConfig | None = None, *, warm: bool = False) -> Starlette:
    """The emulator as an ASGI app; its :class:`EmulatorState` is ``app.state.emulator``."""
    config = config or EmulatorConfig()
    state = EmulatorState(config)

    def stt_engine() -> Any:
        from voxflow.engines.local import LocalTranscriber

        return LocalTranscriber.shared(config.stt_engine, threads=config.local_threads)

    def tts_engine() -> Any:
        from voxflow.engines.local import LocalSynthesizer

        return LocalSynthesizer.shared(config.tts_engine)

    async def run(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(state.executor, fn, *args)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.executor = ThreadPoolExecutor(config.workers, thread_name_prefix="emulator")
        asyncio.get_running_loop().set_default_executor(state.executor)
        if warm:
            await run(stt_engine().load)
            await run(tts_engine().load)
        try:
            yield
        finally:
            state.executor.shutdown(wait=False, cancel_futures=True)

    async def delay(fault: str | None) -> None:
        ms = config.latency_ms + (config.slow_ms if fault == "slow" else 0)
        if ms > 0:
            await asyncio.sleep(ms / 1000)

    def fault_response(fault: str | None, endpoint: str) -> Response | None:
        if fault is None or fault == "slow":
            return None
        if fault == "drop":
            return _Dropped()
        if fault == "malformed":
            if endpoint == "speech":
                return Response(b"<html><body>502 Bad Gateway</body></html>", 200, media_type="text/html")
            return Response(b'{"text": "And so my fellow', 200, media_type="application/json")
        status = int(fault)
        headers = {}
        if status in (429, 503):
            headers["Retry-After"] = _price_str(config.retry_after)
        messages = {
            429: "Rate limit exceeded: free-models-per-min",
            408: "Request timed out",
            500: "Internal Server Error",
            502: "Provider returned error",
            503: "Service temporarily unavailable",
            504: "Gateway timeout",
            524: "Edge network timeout",
            529: "Provider is overloaded",
        }
        return _Problem(status, messages.get(status, f"Emulated error {status}"), headers).response()

    async def handle(request: Request, endpoint: str, work: Any) -> Response:
        entry: dict[str, Any] = {
            "t": time.time(),
            "endpoint": endpoint,
            "model": None,
            "sha256": None,
            "status": None,
            "fault": None,
        }
        started = time.perf_counter()
        try:
            _check_key(request, state)
            response = await work(request, entry)
        except _Problem as problem:
            await _drain(request)
            response = problem.response()
        except Exception as exc:  # an emulator bug: still an OpenRouter-shaped answer, and logged
            log.exception("emulator: %s failed", endpoint)
            await _drain(request)
            response = _Problem(500, f"Internal emulator error: {type(exc).__name__}").response()
        entry["status"] = 0 if isinstance(response, _Dropped) else response.status_code
        entry["ms"] = round((time.perf_counter() - started) * 1000, 1)
        state.record(entry)
        return response

    def requested_model(body: dict[str, Any], entry: dict[str, Any], models: Mapping[str, Any], kind: str) -> Any:
        """The body's model: 400 if missing, 404 if unknown, 402 once the credit is spent."""
        model_id = body.get("model")
        if not isinstance(model_id, str) or not model_id:
            raise _Problem(400, "'model' is required")
        entry["model"] = model_id
        model = models.get(model_id)
        if model is None:
            raise _Problem(404, f"No {kind} model found with id '{model_id}'")
        if not state.credit_left():
            raise _Problem(402, "Insufficient credits. Add more using https://openrouter.ai/credits")
        return model

    # ── POST /audio/transcriptions ──
    async def transcriptions_work(request: Request, entry: dict[str, Any]) -> Response:
        body = await _read_json(request, config.max_body_bytes)
        model = requested_model(body, entry, state.stt, "transcription")
        audio = body.get("input_audio")
        if not isinstance(audio, dict):
            raise _Problem(400, "'input_audio' is required: {data, format} or {url}")
        if "url" in audio and "data" not in audio:
            raise _Problem(400, f"Provider for {model.id} does not support audio URLs")
        fmt = audio.get("format")
        if not isinstance(fmt, str) or fmt not in INPUT_FORMATS:
            raise _Problem(
                400,
                f"Unsupported audio format {fmt!r}; use one of {', '.join(sorted(INPUT_FORMATS))}",
            )
        data = audio.get("data")
        if not isinstance(data, str) or not data:
            raise _Problem(400, "'input_audio.data' must be a non-empty base64 string")
        if data.startswith("data:"):
            raise _Problem(400, "'input_audio.data' must be raw base64, not a data: URI")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise _Problem(400, "'input_audio.data' is not valid base64") from None
        entry["sha256"] = _sha256(raw)
        entry["bytes"] = len(raw)
        options = _transcription_options(body, model)
        fault = state.draw_fault()
        entry["fault"] = fault
        await delay(fault)
        answer = fault_response(fault, "transcriptions")
        if answer is not None:
            return answer
        try:
            pcm = await run(decode_to_pcm, raw, fmt)
        except ValueError as exc:
            raise _Problem(400, f"Could not decode the audio as {fmt}: {exc}") from None
        if len(pcm) % 2:
            raise _Problem(400, "pcm audio must be whole 16-bit samples")
        duration_ms = len(pcm) * 1000 // (2 * PCM_RATE)
        if config.fast_text:
            segments = fake_transcript(entry["sha256"], duration_ms)
            language = "en"
        else:
            segments, language = await recognise(pcm, duration_ms, options)
        result = _transcription_body(segments, language, duration_ms, model, options)
        state.spend(result["usage"]["cost"])
        entry["cost"] = result["usage"]["cost"]
        gen = "gen-stt-" + hashlib.sha256(f"{entry['sha256']}{time.time_ns()}".encode()).hexdigest()
        return JSONResponse(result, headers={"X-Generation-Id": gen[:32]})

    async def recognise(pcm: bytes, duration_ms: int, options: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        from voxflow.engines.base import TranscribeOptions
        from voxflow.models import AudioChunk

        engine = stt_engine()
        opts = TranscribeOptions(
            model=engine.model,
            language=options.get("language"),
            temperature=options.get("temperature"),
        )
        transcript = await engine.transcribe(AudioChunk(0, 0, duration_ms, pcm, "pcm"), opts)
        segments = [
            {
                "start": s.start_ms / 1000,
                "end": s.end_ms / 1000,
                "text": s.text,
                "avg_logprob": math.log(s.confidence) if s.confidence else None,
                "words": [
                    {
                        "word": w.word,
                        "start": w.start_ms / 1000,
                        "end": w.end_ms / 1000,
                        "probability": w.confidence,
                    }
                    for w in s.words
                ],
            }
            for s in transcript.segments
        ]
        return segments, transcript.language

    # ── POST /audio/speech ──
    async def speech_work(request: Request, entry: dict[str, Any]) -> Response:
        body = await _read_json(request, config.max_body_bytes)
        model = requested_model(body, entry, state.tts, "speech")
        text = _speech_text(body.get("input"))
        entry["sha256"] = _sha256(text.encode())
        entry["chars"] = len(text)
        if len(text) > model.max_chars:
            raise _Problem(
                400,
                f"'input' is {len(text)} characters; {model.id} takes at most {model.max_chars}",
            )
        voice = body.get("voice", model.voices[0])
        if not isinstance(voice, str) or voice not in model.voices:
            raise _Problem(
                400,
                f"Voice {voice!r} is not supported by {model.id}; supported: {', '.join(model.voices)}",
            )
        fmt = body.get("response_format", "pcm")
        if fmt not in ("pcm", "mp3"):
            raise _Problem(400, f"Unsupported response_format {fmt!r}; use 'mp3' or 'pcm'")
        speed = body.get("speed")
        if speed is not None:
            if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
                raise _Problem(400, "'speed' must be a number from 0.25 to 4.0")
            if not model.speed and speed != 1.0:
                raise _Problem(400, f"{model.id} does not support the 'speed' parameter")
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise _Problem(400, "'instructions' must be a string")
        fault = state.draw_fault()
        entry["fault"] = fault
        await delay(fault)
        answer = fault_response(fault, "speech")
        if answer is not None:
            return answer
        from voxflow.engines.base import SynthesisOptions

        engine = tts_engine()
        audio = await run(engine.synthesise_sync, text, SynthesisOptions(model=engine.model, speed=speed))
        cost = (
            math.ceil(len(text) / 4) * model.prompt_price
            + audio.duration_ms / 1000 * AUDIO_TOKENS_PER_SECOND * model.audio_output_price
            + model.request_price
        )
        state.spend(cost)
        entry["cost"] = round(cost, 8)
        gen = "gen-tts-" + hashlib.sha256(f"{entry['sha256']}{time.time_ns()}".encode()).hexdigest()
        headers = {"X-Generation-Id": gen[:32]}
        if fmt == "mp3":
            from voxflow.media import encode_pcm

            mp3 = await run(lambda: encode_pcm(audio.pcm, "mp3", sample_rate=audio.sample_rate, bitrate="64k"))
            return Response(mp3, 200, headers=headers, media_type="audio/mpeg")
        media = f"audio/pcm;rate={audio.sample_rate};channels=1"
        return Response(audio.pcm, 200, headers=headers, media_type=media)

    # ── GET /models, GET /key ──
    async def models(request: Request) -> Response:
        wanted = request.query_params.get("output_modalities", "text")
        kinds = {k.strip() for k in wanted.split(",")}
        data = []
        if kinds & {"transcription", "all"}:
            data += [_stt_listing(m) for m in config.stt_models]
        if kinds & {"speech", "all"}:
            data += [_tts_listing(m) for m in config.tts_models]
        state.record(
            {
                "t": time.time(),
                "endpoint": "models",
                "model": None,
                "sha256": None,
                "status": 200,
                "fault": None,
            }
        )
        return JSONResponse({"data": data})

    async def key_work(request: Request, entry: dict[str, Any]) -> Response:
        limit = config.credit_usd
        spent = round(state.spent_usd, 8)
        remaining = None if limit is None else max(0.0, limit - spent)
        return JSONResponse(
            {
                "data": {
                    "label": "emulator",
                    "limit": limit,
                    "usage": spent,
                    "limit_remaining": remaining,
                    "is_free_tier": False,
                }
            }
        )

    async def transcriptions(request: Request) -> Response:
        return await handle(request, "transcriptions", transcriptions_work)

    async def speech(request: Request) -> Response:
        return await handle(request, "speech", speech_work)

    async def key(request: Request) -> Response:
        return await handle(request, "key", key_work)

    async def emulator_log(request: Request) -> Response:
        return JSONResponse(state.log())

    async def emulator_reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route(f"{API_PREFIX}/audio/transcriptions", transcriptions, methods=["POST"]),
            Route(f"{API_PREFIX}/audio/speech", speech, methods=["POST"]),
            Route(f"{API_PREFIX}/models", models, methods=["GET"]),
            Route(f"{API_PREFIX}/key", key, methods=["GET"]),
            Route("/_emulator/log", emulator_log, methods=["GET"]),
            Route("/_emulator/reset", emulator_reset, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.emulator = state
    return app


def _transcription_options(body: dict[str, Any], model: SttModel) -> dict[str, Any]:
    """The request's options, validated like OpenRouter does (400 on anything wrong)."""
    fmt = body.get("response_format", "json")
    if fmt not in ("json", "verbose_json"):
        raise _Problem(400, f"Unsupported response_format {fmt!r}; use 'json' or 'verbose_json'")
    if fmt == "verbose_json" and model.timestamps == "json_only":
        raise _Problem(400, f"response_format 'verbose_json' is not supported by {model.id}; use 'json'")
    grains = body.get("timestamp_granularities")
    if grains is not None:
        if fmt != "verbose_json":
            raise _Problem(400, "timestamp_granularities requires response_format 'verbose_json'")
        if not isinstance(grains, list) or not all(g in ("segment", "word") for g in grains):
            raise _Problem(400, "timestamp_granularities must be a list of 'segment', 'word'")
    diarize = body.get("diarize", False)
    if not isinstance(diarize, bool):
        raise _Problem(400, "'diarize' must be a boolean")
    if diarize and fmt != "verbose_json":
        raise _Problem(400, "'diarize' requires response_format 'verbose_json'")
    if diarize and not model.diarize:
        raise _Problem(400, f"{model.id} does not support diarization")
    keyterms = body.get("keyterms")
    if keyterms is not None:
        if not isinstance(keyterms, list) or not all(isinstance(k, str) for k in keyterms):
            raise _Problem(400, "'keyterms' must be a list of strings")
        if keyterms and not model.keyterms:
            raise _Problem(400, f"{model.id} does not support keyterms")
    temperature = body.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 1):
        raise _Problem(400, "'temperature' must be a number from 0 to 1")
    language = body.get("language")
    if language is not None and (not isinstance(language, str) or not 2 <= len(language) <= 3):
        raise _Problem(400, "'language' must be an ISO-639-1 code such as 'en'")
    provider = body.get("provider")
    if provider is not None and not isinstance(provider, dict):
        raise _Problem(400, "'provider' must be an object")
    return {
        "verbose": fmt == "verbose_json",
        "granularities": set(grains) if grains else {"segment"},
        "diarize": diarize,
        "language": language,
        "temperature": float(temperature) if temperature is not None else None,
    }


def _transcription_body(
    segments: list[dict[str, Any]],
    language: str,
    duration_ms: int,
    model: SttModel,
    options: dict[str, Any],
) -> dict[str, Any]:
    text = " ".join(s["text"].strip() for s in segments).strip()
    seconds = duration_ms / 1000
    audio_tokens = math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)
    out_tokens = math.ceil(len(text) / 4)
    cost = audio_tokens * model.audio_price + out_tokens * model.completion_price
    cost = round(cost + model.request_price, 8)
    usage: dict[str, Any] = {"cost": cost}
    if model.billing == "seconds":
        usage["seconds"] = round(seconds, 3)
    else:
        usage.update(
            input_tokens=audio_tokens,
            output_tokens=out_tokens,
            total_tokens=audio_tokens + out_tokens,
        )
    body: dict[str, Any] = {"text": text, "usage": usage}
    if not options["verbose"] or model.timestamps != "verbose":
        return body
    body.update(task="transcribe", language=_language_name(language), duration=round(seconds, 3))
    words_out = []
    segs_out = []
    for i, s in enumerate(segments):
        speaker = i % 2 if options["diarize"] else None
        seg = {
            "id": i,
            "seek": 0,
            "start": round(s["start"], 3),
            "end": round(s["end"], 3),
            "text": " " + s["text"].strip(),
            "temperature": options["temperature"] or 0.0,
            "avg_logprob": s.get("avg_logprob"),
            "compression_ratio": 1.4,
            "no_speech_prob": s.get("no_speech_prob", 0.01),
        }
        if seg["avg_logprob"] is None:
            del seg["avg_logprob"]
        if speaker is not None:
            seg.update(speaker=speaker, speaker_label=f"speaker_{speaker}")
        segs_out.append(seg)
        for w in s["words"]:
            word = {"word": w["word"], "start": round(w["start"], 3), "end": round(w["end"], 3)}
            if w.get("probability") is not None:
                word["confidence"] = round(float(w["probability"]), 4)
            if speaker is not None:
                word.update(speaker=speaker, speaker_label=f"speaker_{speaker}", type="word")
            words_out.append(word)
    if "segment" in options["granularities"]:
        body["segments"] = segs_out
    if "word" in options["granularities"]:
        body["words"] = words_out
    return body


def _speech_text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and value:
        parts = []
        for turn in value:
            if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
                raise _Problem(400, "each 'input' turn must be an object with a 'text' string")
            parts.append(turn["text"])
        text = "\n".join(parts)
    else:
        raise _Problem(400, "'input' is required: a string or a list of turns")
    if not text.strip():
        raise _Problem(400, "'input' is empty")
    return text


def _listing(model_id: str, name: str, inputs: list[str], outputs: list[str]) -> dict[str, Any]:
    return {
        "id": model_id,
        "canonical_slug": model_id,
        "name": name,
        "created": 1_767_225_600,
        "description": f"{name} (served by the voxflow emulator)",
        "context_length": None,
        "architecture": {
            "input_modalities": inputs,
            "output_modalities": outputs,
            "modality": f"{'+'.join(inputs)}->{'+'.join(outputs)}",
            "tokenizer": "Other",
            "instruct_type": None,
        },
        "top_provider": {
            "context_length": None,
            "max_completion_tokens": None,
            "is_moderated": False,
        },
        "per_request_limits": None,
        "default_parameters": None,
        "links": {"details": f"{API_PREFIX}/models/{model_id}/endpoints"},
    }


def _stt_listing(m: SttModel) -> dict[str, Any]:
    params = ["language", "temperature", "response_format", "provider"]
    if m.timestamps == "verbose":
        params.append("timestamp_granularities")
    params += ["diarize"] * m.diarize + ["keyterms"] * m.keyterms
    return {
        **_listing(m.id, m.name, ["audio"], ["transcription"]),
        "pricing": {
            "prompt": "0",
            "completion": _price_str(m.completion_price),
            "audio": _price_str(m.audio_price),
            "request": _price_str(m.request_price),
        },
        "supported_parameters": params,
        "supported_voices": None,
    }


def _tts_listing(m: TtsModel) -> dict[str, Any]:
    params = ["voice", "response_format", "provider"]
    params += ["speed"] * m.speed + ["instructions"] * m.instructions
    return {
        **_listing(m.id, m.name, ["text"], ["speech"]),
        "pricing": {
            "prompt": _price_str(m.prompt_price),
            "completion": "0",
            "audio_output": _price_str(m.audio_output_price),
            "request": _price_str(m.request_price),
        },
        "supported_parameters": params,
        "supported_voices": list(m.voices),
    }


# ─── running it ─────────────────────────────────────────────────────────────────────────


def _server(app: Starlette, host: str, port: int) -> Any:
    import uvicorn

    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(_QuietDrops())
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http="h11",
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        backlog=2048,
        timeout_keep_alive=30,
        limit_concurrency=None,
        h11_max_incomplete_event_size=64 * 1024,
    )
    return uvicorn.Server(config)


def run_emulator(host: str = "127.0.0.1", port: int = 8089, config: EmulatorConfig | None = None) -> None:
    """Serve the emulator until interrupted (Ctrl-C)."""
    server = _server(create_app(config, warm=True), host, port)
    server.run()


def serve(port: int, faults: str | None, latency_ms: int, keys: list[str]) -> None:
    """The ``voxflow emulator`` command: serve on 127.0.0.1:``port`` until Ctrl-C."""
    config = EmulatorConfig(keys=tuple(keys) or (DEFAULT_KEY,), faults=faults or None, latency_ms=latency_ms)
    which = "the default test key (voxflow.emulator.DEFAULT_KEY)" if not keys else "your key(s)"
    print(f"voxflow emulator: OPENROUTER_BASE_URL=http://127.0.0.1:{port}{API_PREFIX}")
    print(f"  accepts {which}; faults: {faults or 'none'}; latency: {latency_ms} ms")
    run_emulator("127.0.0.1", port, config)


class EmulatorHandle:
    """A running emulator in a background thread (see :func:`start_emulator_in_thread`)."""

    def __init__(self, server: Any, thread: threading.Thread, state: EmulatorState, host: str, port: int) -> None:
        self._server = server
        self._thread = thread
        self.state = state
        self.host = host
        self.port = port
        self.root = f"http://{host}:{port}"
        self.url = self.root + API_PREFIX  # what OPENROUTER_BASE_URL should be

    @property
    def config(self) -> EmulatorConfig:
        return self.state.config

    @property
    def key(self) -> str:
        return self.state.config.keys[0]

    def log(self) -> list[dict[str, Any]]:
        """The request log (a copy)."""
        return self.state.log()

    def reset(self) -> None:
        self.state.reset()

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmulatorHandle(url={self.url!r})"


def start_emulator_in_thread(
    config: EmulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    warm: bool = False,
    **overrides: Any,
) -> EmulatorHandle:
    """Start an emulator on ``host:port`` (0 = a free port) and return once it listens.

    ``overrides`` replace config fields: ``start_emulator_in_thread(faults="429:0.3")``.
    """
    config = replace(config or EmulatorConfig(), **overrides)
    app = create_app(config, warm=warm)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    server = _server(app, host, sock.getsockname()[1])
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="voxflow-emulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the emulator did not start")
        time.sleep(0.01)
    return EmulatorHandle(server, thread, app.state.emulator, host, sock.getsockname()[1])


__all__ = [
    "DEFAULT_KEY",
    "EmulatorConfig",
    "EmulatorHandle",
    "EmulatorState",
    "SttModel",
    "TtsModel",
    "create_app",
    "parse_faults",
    "run_emulator",
    "serve",
    "start_emulator_in_thread",
]
