"""``POST /audio/transcriptions`` without the HTTP: the request's audio and options validated
as OpenRouter does, recognition (real, or the deterministic ``fast_text``) and the answer body."""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

from voxflow.testing.emulator.config import AUDIO_TOKENS_PER_SECOND, INPUT_FORMATS, PCM_RATE, SttModel
from voxflow.testing.emulator.protocol import Problem

_FAKE_TEXT = (
    "the quick brown fox jumps over a lazy dog while seven bright stars watch from above "
    "and river stones remember every quiet song of morning rain across the open field"
)
_FAKE_WORDS = tuple(_FAKE_TEXT.split())
_LANGUAGE_NAMES = {
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


@dataclass(frozen=True)
class SttOptions:
    """What a valid transcription request asks for beside its audio."""

    verbose: bool
    granularities: frozenset[str]
    diarize: bool
    language: str | None
    temperature: float | None


def input_audio(body: dict[str, Any], model: SttModel) -> tuple[bytes, str]:
    """The request's audio bytes and format, or a 400 naming what is wrong with them."""
    audio = body.get("input_audio")
    if not isinstance(audio, dict):
        raise Problem(400, "'input_audio' is required: {data, format} or {url}")
    if "url" in audio and "data" not in audio:
        raise Problem(400, f"Provider for {model.id} does not support audio URLs")
    fmt = audio.get("format")
    if not isinstance(fmt, str) or fmt not in INPUT_FORMATS:
        raise Problem(400, f"Unsupported audio format {fmt!r}; use one of {', '.join(sorted(INPUT_FORMATS))}")
    data = audio.get("data")
    if not isinstance(data, str) or not data:
        raise Problem(400, "'input_audio.data' must be a non-empty base64 string")
    if data.startswith("data:"):
        raise Problem(400, "'input_audio.data' must be raw base64, not a data: URI")
    try:
        return base64.b64decode(data, validate=True), fmt
    except (binascii.Error, ValueError):
        raise Problem(400, "'input_audio.data' is not valid base64") from None


def transcription_options(body: dict[str, Any], model: SttModel) -> SttOptions:
    """The request's options, validated like OpenRouter does (400 on anything wrong)."""
    fmt = body.get("response_format", "json")
    if fmt not in ("json", "verbose_json"):
        raise Problem(400, f"Unsupported response_format {fmt!r}; use 'json' or 'verbose_json'")
    if fmt == "verbose_json" and model.timestamps == "json_only":
        raise Problem(400, f"response_format 'verbose_json' is not supported by {model.id}; use 'json'")
    grains = body.get("timestamp_granularities")
    if grains is not None:
        if fmt != "verbose_json":
            raise Problem(400, "timestamp_granularities requires response_format 'verbose_json'")
        if not isinstance(grains, list) or not all(g in ("segment", "word") for g in grains):
            raise Problem(400, "timestamp_granularities must be a list of 'segment', 'word'")
    diarize = body.get("diarize", False)
    if not isinstance(diarize, bool):
        raise Problem(400, "'diarize' must be a boolean")
    if diarize and fmt != "verbose_json":
        raise Problem(400, "'diarize' requires response_format 'verbose_json'")
    if diarize and not model.diarize:
        raise Problem(400, f"{model.id} does not support diarization")
    keyterms = body.get("keyterms")
    if keyterms is not None:
        if not isinstance(keyterms, list) or not all(isinstance(k, str) for k in keyterms):
            raise Problem(400, "'keyterms' must be a list of strings")
        if keyterms and not model.keyterms:
            raise Problem(400, f"{model.id} does not support keyterms")
    temperature = body.get("temperature")
    if temperature is not None and (not isinstance(temperature, int | float) or not 0 <= temperature <= 1):
        raise Problem(400, "'temperature' must be a number from 0 to 1")
    language = body.get("language")
    if language is not None and (not isinstance(language, str) or not 2 <= len(language) <= 3):
        raise Problem(400, "'language' must be an ISO-639-1 code such as 'en'")
    provider = body.get("provider")
    if provider is not None and not isinstance(provider, dict):
        raise Problem(400, "'provider' must be an object")
    return SttOptions(
        verbose=fmt == "verbose_json",
        granularities=frozenset(grains) if grains else frozenset({"segment"}),
        diarize=diarize,
        language=language,
        temperature=float(temperature) if temperature is not None else None,
    )


def decode_to_pcm(data: bytes, fmt: str) -> bytes:
    """Any supported upload → 16 kHz mono s16le (voxflow.media); ValueError if it does not decode."""
    from voxflow.errors import AudioError
    from voxflow.media import decode_to_pcm as decode

    try:
        return decode(data, fmt, sample_rate=PCM_RATE)
    except AudioError as exc:
        raise ValueError(str(exc)[:200]) from None


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


async def recognise(engine: Any, pcm: bytes, duration_ms: int, options: SttOptions) -> tuple[list[dict[str, Any]], str]:
    """Real segments (seconds, words with probabilities) and language from the local ``engine``."""
    from voxflow.engines.base import TranscribeOptions
    from voxflow.models import AudioChunk

    opts = TranscribeOptions(model=engine.model, language=options.language, temperature=options.temperature)
    transcript = await engine.transcribe(AudioChunk(0, 0, duration_ms, pcm, "pcm"), opts)
    segments = [
        {
            "start": s.start_ms / 1000,
            "end": s.end_ms / 1000,
            "text": s.text,
            "avg_logprob": math.log(s.confidence) if s.confidence else None,
            "words": [
                {"word": w.word, "start": w.start_ms / 1000, "end": w.end_ms / 1000, "probability": w.confidence}
                for w in s.words
            ],
        }
        for s in transcript.segments
    ]
    return segments, transcript.language


def transcription_body(
    segments: list[dict[str, Any]], language: str, duration_ms: int, model: SttModel, options: SttOptions
) -> dict[str, Any]:
    """The JSON answer: text and usage, plus timed segments/words when verbose is asked and offered."""
    text = " ".join(s["text"].strip() for s in segments).strip()
    seconds = duration_ms / 1000
    body: dict[str, Any] = {"text": text, "usage": _usage(text, seconds, model)}
    if not options.verbose or model.timestamps != "verbose":
        return body
    body.update(task="transcribe", language=_LANGUAGE_NAMES.get(language, language), duration=round(seconds, 3))
    speakers = [i % 2 if options.diarize else None for i in range(len(segments))]
    if "segment" in options.granularities:
        body["segments"] = [_segment(i, s, speakers[i], options) for i, s in enumerate(segments)]
    if "word" in options.granularities:
        body["words"] = [_word(w, speakers[i]) for i, s in enumerate(segments) for w in s["words"]]
    return body


def _usage(text: str, seconds: float, model: SttModel) -> dict[str, Any]:
    audio_tokens = math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)
    out_tokens = math.ceil(len(text) / 4)
    cost = audio_tokens * model.audio_price + out_tokens * model.completion_price
    usage: dict[str, Any] = {"cost": round(cost + model.request_price, 8)}
    if model.billing == "seconds":
        usage["seconds"] = round(seconds, 3)
    else:
        usage.update(input_tokens=audio_tokens, output_tokens=out_tokens, total_tokens=audio_tokens + out_tokens)
    return usage


def _segment(i: int, s: dict[str, Any], speaker: int | None, options: SttOptions) -> dict[str, Any]:
    seg = {
        "id": i,
        "seek": 0,
        "start": round(s["start"], 3),
        "end": round(s["end"], 3),
        "text": " " + s["text"].strip(),
        "temperature": options.temperature or 0.0,
        "avg_logprob": s.get("avg_logprob"),
        "compression_ratio": 1.4,
        "no_speech_prob": s.get("no_speech_prob", 0.01),
    }
    if seg["avg_logprob"] is None:
        del seg["avg_logprob"]
    if speaker is not None:
        seg.update(speaker=speaker, speaker_label=f"speaker_{speaker}")
    return seg


def _word(w: dict[str, Any], speaker: int | None) -> dict[str, Any]:
    word = {"word": w["word"], "start": round(w["start"], 3), "end": round(w["end"], 3)}
    if w.get("probability") is not None:
        word["confidence"] = round(float(w["probability"]), 4)
    if speaker is not None:
        word.update(speaker=speaker, speaker_label=f"speaker_{speaker}", type="word")
    return word
