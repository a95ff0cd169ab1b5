"""``POST /audio/speech`` without the HTTP: the request's text and options validated as
OpenRouter does, and what the answer costs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from voxflow.testing.emulator.config import AUDIO_TOKENS_PER_SECOND, TtsModel
from voxflow.testing.emulator.protocol import Problem


@dataclass(frozen=True)
class SpeechOptions:
    """What a valid speech request asks for beside its text."""

    voice: str
    response_format: Literal["pcm", "mp3"]
    speed: float | None


def speech_text(value: Any) -> str:
    """The ``input`` to speak: a string, or turns of ``{"text": …}`` joined by newlines."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and value:
        parts = []
        for turn in value:
            if not isinstance(turn, dict) or not isinstance(turn.get("text"), str):
                raise Problem(400, "each 'input' turn must be an object with a 'text' string")
            parts.append(turn["text"])
        text = "\n".join(parts)
    else:
        raise Problem(400, "'input' is required: a string or a list of turns")
    if not text.strip():
        raise Problem(400, "'input' is empty")
    return text


def speech_options(body: dict[str, Any], model: TtsModel, text: str) -> SpeechOptions:
    """The request's options, validated like OpenRouter does (400 on anything wrong)."""
    if len(text) > model.max_chars:
        raise Problem(400, f"'input' is {len(text)} characters; {model.id} takes at most {model.max_chars}")
    voice = body.get("voice", model.voices[0])
    if not isinstance(voice, str) or voice not in model.voices:
        raise Problem(400, f"Voice {voice!r} is not supported by {model.id}; supported: {', '.join(model.voices)}")
    fmt = body.get("response_format", "pcm")
    if fmt not in ("pcm", "mp3"):
        raise Problem(400, f"Unsupported response_format {fmt!r}; use 'mp3' or 'pcm'")
    speed = body.get("speed")
    if speed is not None:
        if not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            raise Problem(400, "'speed' must be a number from 0.25 to 4.0")
        if not model.speed and speed != 1.0:
            raise Problem(400, f"{model.id} does not support the 'speed' parameter")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise Problem(400, "'instructions' must be a string")
    return SpeechOptions(voice=voice, response_format=fmt, speed=speed)


def speech_cost(text: str, duration_ms: int, model: TtsModel) -> float:
    """USD for speaking ``text`` as ``duration_ms`` of audio: text tokens in, audio tokens out."""
    return (
        math.ceil(len(text) / 4) * model.prompt_price
        + duration_ms / 1000 * AUDIO_TOKENS_PER_SECOND * model.audio_output_price
        + model.request_price
    )
