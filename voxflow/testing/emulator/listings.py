"""``GET /models``: the emulator's models as OpenRouter lists them (pricing as USD strings
per token, supported parameters and voices)."""

from __future__ import annotations

from typing import Any

from voxflow.testing.emulator.config import API_PREFIX, ChatModel, EmulatorConfig, SttModel, TtsModel
from voxflow.testing.emulator.protocol import price_str


def model_listings(config: EmulatorConfig, output_modalities: str) -> list[dict[str, Any]]:
    """The models whose output is one of ``output_modalities`` (``transcription,speech,text`` or ``all``)."""
    kinds = {k.strip() for k in output_modalities.split(",")}
    data = []
    if kinds & {"transcription", "all"}:
        data += [_stt_listing(m) for m in config.stt_models]
    if kinds & {"speech", "all"}:
        data += [_tts_listing(m) for m in config.tts_models]
    if kinds & {"text", "all"}:
        data += [_chat_listing(m) for m in config.chat_models]
    return data


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
            "completion": price_str(m.completion_price),
            "audio": price_str(m.audio_price),
            "request": price_str(m.request_price),
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
            "prompt": price_str(m.prompt_price),
            "completion": "0",
            "audio_output": price_str(m.audio_output_price),
            "request": price_str(m.request_price),
        },
        "supported_parameters": params,
        "supported_voices": list(m.voices),
    }


def _chat_listing(m: ChatModel) -> dict[str, Any]:
    listing = _listing(m.id, m.name, ["text"], ["text"])
    listing["context_length"] = m.context_length
    listing["top_provider"] = {**listing["top_provider"], "context_length": m.context_length}
    return {
        **listing,
        "pricing": {
            "prompt": price_str(m.prompt_price),
            "completion": price_str(m.completion_price),
            "request": "0",
        },
        "supported_parameters": ["max_tokens", "temperature", "response_format", "structured_outputs", "seed"],
        "supported_voices": None,
    }
