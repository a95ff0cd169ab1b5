"""The emulator as a Starlette app. Each route is a module-level handler that finds the
emulator's :class:`EmulatorState` at ``request.app.state.emulator``; :func:`_serve` wraps the
billed endpoints with the key check, OpenRouter-shaped errors and the request log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from voxflow.testing.emulator import chat
from voxflow.testing.emulator.config import API_PREFIX, PCM_RATE, EmulatorConfig
from voxflow.testing.emulator.faults import Dropped
from voxflow.testing.emulator.listings import model_listings
from voxflow.testing.emulator.protocol import Problem, check_key, drain, generation_id, read_json, sha256
from voxflow.testing.emulator.speech import speech_cost, speech_options, speech_text
from voxflow.testing.emulator.state import EmulatorState, Endpoint, new_entry
from voxflow.testing.emulator.transcription import (
    decode_to_pcm,
    fake_transcript,
    input_audio,
    recognise,
    transcription_body,
    transcription_options,
)

log = logging.getLogger(__name__)

Work = Callable[[Request, EmulatorState, dict[str, Any]], Awaitable[Response]]
Model = TypeVar("Model")


def create_app(config: EmulatorConfig | None = None, *, warm: bool = False) -> Starlette:
    """The emulator as an ASGI app; its :class:`EmulatorState` is ``app.state.emulator``."""
    app = Starlette(routes=_ROUTES, lifespan=_lifespan)
    app.state.emulator = EmulatorState(config or EmulatorConfig(), warm=warm)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    state: EmulatorState = app.state.emulator
    state.executor = ThreadPoolExecutor(state.config.workers, thread_name_prefix="emulator")
    asyncio.get_running_loop().set_default_executor(state.executor)
    if state.warm:
        await state.run(state.stt_engine().load)
        await state.run(state.tts_engine().load)
    try:
        yield
    finally:
        state.executor.shutdown(wait=False, cancel_futures=True)


def _state(request: Request) -> EmulatorState:
    return request.app.state.emulator


async def _serve(request: Request, endpoint: Endpoint, work: Work) -> Response:
    """Check the key, run ``work``, turn any failure into an OpenRouter-shaped error, log the request."""
    state = _state(request)
    entry = new_entry(endpoint)
    started = time.perf_counter()
    try:
        check_key(request, state.config.keys)
        response = await work(request, state, entry)
    except Problem as problem:
        await drain(request)
        response = problem.response()
    except Exception as exc:  # an emulator bug: still an OpenRouter-shaped answer, and logged
        log.exception("emulator: %s failed", endpoint)
        await drain(request)
        response = Problem(500, f"Internal emulator error: {type(exc).__name__}").response()
    entry["status"] = 0 if isinstance(response, Dropped) else response.status_code
    entry["ms"] = round((time.perf_counter() - started) * 1000, 1)
    state.record(entry)
    return response


def _requested_model(
    state: EmulatorState, body: dict[str, Any], entry: dict[str, Any], models: Mapping[str, Model], kind: str
) -> Model:
    """The body's model: 400 if missing, 404 if unknown, 402 once the credit is spent."""
    model_id = body.get("model")
    if not isinstance(model_id, str) or not model_id:
        raise Problem(400, "'model' is required")
    entry["model"] = model_id
    model = models.get(model_id)
    if model is None:
        raise Problem(404, f"No {kind} model found with id '{model_id}'")
    if not state.credit_left():
        raise Problem(402, "Insufficient credits. Add more using https://openrouter.ai/credits")
    return model


async def _transcribe(request: Request, state: EmulatorState, entry: dict[str, Any]) -> Response:
    body = await read_json(request, state.config.max_body_bytes)
    model = _requested_model(state, body, entry, state.stt, "transcription")
    raw, fmt = input_audio(body, model)
    entry["sha256"] = sha256(raw)
    entry["bytes"] = len(raw)
    options = transcription_options(body, model)
    fault_answer = await state.faults.inject(entry, "transcriptions")
    if fault_answer is not None:
        return fault_answer
    try:
        pcm = await state.run(decode_to_pcm, raw, fmt)
    except ValueError as exc:
        raise Problem(400, f"Could not decode the audio as {fmt}: {exc}") from None
    if len(pcm) % 2:
        raise Problem(400, "pcm audio must be whole 16-bit samples")
    duration_ms = len(pcm) * 1000 // (2 * PCM_RATE)
    if state.config.fast_text:
        segments, language = fake_transcript(entry["sha256"], duration_ms), "en"
    else:
        segments, language = await recognise(state.stt_engine(), pcm, duration_ms, options)
    result = transcription_body(segments, language, duration_ms, model, options)
    state.spend(result["usage"]["cost"])
    entry["cost"] = result["usage"]["cost"]
    return JSONResponse(result, headers={"X-Generation-Id": generation_id("stt", entry["sha256"])})


async def _speak(request: Request, state: EmulatorState, entry: dict[str, Any]) -> Response:
    body = await read_json(request, state.config.max_body_bytes)
    model = _requested_model(state, body, entry, state.tts, "speech")
    text = speech_text(body.get("input"))
    entry["sha256"] = sha256(text.encode())
    entry["chars"] = len(text)
    options = speech_options(body, model, text)
    fault_answer = await state.faults.inject(entry, "speech")
    if fault_answer is not None:
        return fault_answer
    from voxflow.engines.base import SynthesisOptions

    engine = state.tts_engine()
    audio = await state.run(engine.synthesise_sync, text, SynthesisOptions(model=engine.model, speed=options.speed))
    cost = speech_cost(text, audio.duration_ms, model)
    state.spend(cost)
    entry["cost"] = round(cost, 8)
    headers = {"X-Generation-Id": generation_id("tts", entry["sha256"])}
    if options.response_format == "mp3":
        from voxflow.media import encode_pcm

        mp3 = await state.run(lambda: encode_pcm(audio.pcm, "mp3", sample_rate=audio.sample_rate, bitrate="64k"))
        return Response(mp3, 200, headers=headers, media_type="audio/mpeg")
    media = f"audio/pcm;rate={audio.sample_rate};channels=1"
    return Response(audio.pcm, 200, headers=headers, media_type=media)


async def _complete(request: Request, state: EmulatorState, entry: dict[str, Any]) -> Response:
    body = await read_json(request, state.config.max_body_bytes)
    model = _requested_model(state, body, entry, state.chat, "chat")
    messages = chat.chat_messages(body)
    used = chat.check_context(messages, model)
    target = chat.translation_target(messages)
    entry["sha256"] = sha256(chat.last_user(messages).encode())
    entry["language"] = target
    entry["lines"] = len(chat.numbered_lines(chat.last_user(messages)))
    fault_answer = await state.chat_faults.inject(entry, "chat")
    if fault_answer is not None:
        return fault_answer
    entry["minutes"] = chat.asks_for_minutes(messages)
    entry["prompt_tokens"] = used
    entry["context_length"] = model.context_length
    if entry["minutes"]:
        content = chat.minutes(messages, bad_cite=state.spoil_a_cite(), prose=state.in_prose())
    elif target is None:
        content = chat.echoed(messages)
    else:
        content = chat.translated(messages, target, lose_a_line=state.lose_a_line(target))
    generation = generation_id("chat", entry["sha256"])
    result = chat.completion_body(model, content, used, generation, int(time.time()))
    state.spend(result["usage"]["cost"])
    entry["cost"] = result["usage"]["cost"]
    entry["completion_tokens"] = result["usage"]["completion_tokens"]
    return JSONResponse(result, headers={"X-Generation-Id": generation})


async def _key(request: Request, state: EmulatorState, entry: dict[str, Any]) -> Response:
    limit = state.config.credit_usd
    spent = round(state.spent_usd, 8)
    remaining = None if limit is None else max(0.0, limit - spent)
    data = {"label": "emulator", "limit": limit, "usage": spent, "limit_remaining": remaining, "is_free_tier": False}
    return JSONResponse({"data": data})


async def transcriptions(request: Request) -> Response:
    """``POST /api/v1/audio/transcriptions``."""
    return await _serve(request, "transcriptions", _transcribe)


async def speech(request: Request) -> Response:
    """``POST /api/v1/audio/speech``."""
    return await _serve(request, "speech", _speak)


async def chat_completions(request: Request) -> Response:
    """``POST /api/v1/chat/completions``."""
    return await _serve(request, "chat", _complete)


async def key(request: Request) -> Response:
    """``GET /api/v1/key``: the key's limit and usage."""
    return await _serve(request, "key", _key)


async def models(request: Request) -> Response:
    """``GET /api/v1/models?output_modalities=…`` (no key needed)."""
    state = _state(request)
    data = model_listings(state.config, request.query_params.get("output_modalities", "text"))
    entry = new_entry("models")
    entry["status"] = 200
    state.record(entry)
    return JSONResponse({"data": data})


async def emulator_log(request: Request) -> Response:
    """``GET /_emulator/log``: every request so far."""
    return JSONResponse(_state(request).log())


async def emulator_reset(request: Request) -> Response:
    """``POST /_emulator/reset``: clear the log and the spent credit."""
    _state(request).reset()
    return JSONResponse({"ok": True})


_ROUTES = [
    Route(f"{API_PREFIX}/audio/transcriptions", transcriptions, methods=["POST"]),
    Route(f"{API_PREFIX}/audio/speech", speech, methods=["POST"]),
    Route(f"{API_PREFIX}/chat/completions", chat_completions, methods=["POST"]),
    Route(f"{API_PREFIX}/models", models, methods=["GET"]),
    Route(f"{API_PREFIX}/key", key, methods=["GET"]),
    Route("/_emulator/log", emulator_log, methods=["GET"]),
    Route("/_emulator/reset", emulator_reset, methods=["POST"]),
]
