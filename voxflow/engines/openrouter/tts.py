"""Text to speech through OpenRouter: ``POST /audio/speech`` and decoding the audio it sends."""

from __future__ import annotations

import asyncio
import io
import wave
from typing import TYPE_CHECKING, Any, Literal

import httpx

from voxflow.engines.base import SpeechAudio, SynthesisOptions, Synthesizer
from voxflow.engines.openrouter.engine import OpenRouterEngine
from voxflow.engines.openrouter.models import speech_cost, tts_input_limit
from voxflow.errors import AudioError, BadResponse, RequestRejected

if TYPE_CHECKING:
    from voxflow.settings import Settings

PCM_DEFAULT_RATE = 24_000  # OpenAI-style pcm when Content-Type names no rate
MP3_DECODE_RATE = 24_000


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
        raise BadResponse("OpenRouter answered with empty audio", transient=True)
    if not kind.startswith("audio/"):
        # A 200 that is not audio (an HTML error page, a JSON error) comes from a flaky edge.
        message = f"OpenRouter answered {kind or 'no content type'}, not audio"
        raise BadResponse(message, transient=True)
    if kind in ("audio/pcm", "audio/l16", "audio/raw") and len(raw.content) % 2:
        raise BadResponse("OpenRouter answered with PCM cut mid-sample", transient=True)
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


class OpenRouterSynthesizer(OpenRouterEngine, Synthesizer):
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
        **engine: Any,
    ) -> None:
        """``engine``: limiter, transport, sleep, provider, pricing (see :class:`OpenRouterEngine`)."""
        super().__init__(model, settings, **engine)
        self.voice = voice if voice is not None else settings.voice
        self.response_format = response_format
        self.max_input_chars = max_input_chars or tts_input_limit(model)

    def estimate_cost(self, chars: int) -> float:
        """USD for speaking ``chars`` characters (0.0 if pricing unknown)."""
        return speech_cost(self.pricing, chars) if self.pricing else 0.0

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
