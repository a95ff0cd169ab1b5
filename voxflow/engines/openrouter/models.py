"""What OpenRouter says about its models (``GET /models``, ``GET /key``) and what voxflow
knows besides: which models answer text only, how much text a speech model takes per
request, and how a model's per-token pricing becomes a cost estimate."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import httpx

from voxflow.engines.openrouter.client import OpenRouterClient, Sleep, json_object
from voxflow.errors import BadResponse, EngineError, UnknownModel

if TYPE_CHECKING:
    from voxflow.settings import Settings

log = logging.getLogger(__name__)

Kind = Literal["transcription", "speech", "text"]  # the output modality, as GET /models names it

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


# ─── capabilities ───────────────────────────────────────────────────────────────────────


def tts_input_limit(model: str) -> int:
    for prefix, limit in TTS_INPUT_LIMITS:
        if model.startswith(prefix):
            return limit
    return DEFAULT_TTS_INPUT_LIMIT


# ─── pricing ────────────────────────────────────────────────────────────────────────────


def price(pricing: Mapping[str, Any], key: str) -> float:
    """USD per unit for ``key`` ("prompt", "audio", "request" …); 0.0 if absent or odd."""
    try:
        value = float(pricing.get(key) or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def transcription_cost(pricing: Mapping[str, Any], duration_ms: int) -> float:
    """USD for transcribing ``duration_ms`` of audio in one request."""
    seconds = max(0, duration_ms) / 1000
    audio = price(pricing, "audio") or price(pricing, "prompt")
    per_second = AUDIO_TOKENS_PER_SECOND * audio
    per_second += TEXT_TOKENS_PER_SECOND * price(pricing, "completion")
    return seconds * per_second + price(pricing, "request")


def speech_cost(pricing: Mapping[str, Any], chars: int) -> float:
    """USD for speaking ``chars`` characters in one request."""
    tokens_in = math.ceil(max(0, chars) / CHARS_PER_TOKEN)
    seconds = max(0, chars) / SPOKEN_CHARS_PER_SECOND
    return (
        tokens_in * price(pricing, "prompt")
        + seconds * AUDIO_TOKENS_PER_SECOND * price(pricing, "audio_output")
        + price(pricing, "request")
    )


def chat_cost(pricing: Mapping[str, Any], prompt_tokens: int, completion_tokens: int) -> float:
    """USD for one chat completion of these token counts."""
    return (
        max(0, prompt_tokens) * price(pricing, "prompt")
        + max(0, completion_tokens) * price(pricing, "completion")
        + price(pricing, "request")
    )


# ─── GET /models, GET /key ──────────────────────────────────────────────────────────────


async def _get(
    settings: Settings,
    path: str,
    what: str,
    transport: httpx.AsyncBaseTransport | None,
    sleep: Sleep,
    **call: Any,
) -> dict[str, Any]:
    """One GET on a client of its own, closed afterwards."""
    client = OpenRouterClient(settings, transport=transport, sleep=sleep)
    try:
        return await client.call("GET", path, json_object, what=what, **call)
    finally:
        await client.aclose()


async def list_models(
    settings: Settings,
    kind: Kind,
    transport: httpx.AsyncBaseTransport | None = None,
    *,
    sleep: Sleep = asyncio.sleep,
) -> list[dict[str, Any]]:
    """``GET /models?output_modalities=kind``: the STT or TTS models with pricing and voices."""
    params = {"output_modalities": kind}
    body = await _get(settings, "/models", f"{kind} model list", transport, sleep, params=params, need_key=False)
    models = body.get("data")
    if not isinstance(models, list):
        raise BadResponse("OpenRouter's model list has no 'data' array")
    return [m for m in models if isinstance(m, dict) and isinstance(m.get("id"), str)]


async def model_pricing(
    settings: Settings,
    model: str,
    kind: Kind,
    transport: httpx.AsyncBaseTransport | None,
    sleep: Sleep,
) -> dict[str, Any] | None:
    """The model's pricing from ``/models``; None if it is unlisted or the list is unreachable."""
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
    body = await _get(settings, "/key", "key check", transport, sleep)
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
