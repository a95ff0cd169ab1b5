"""OpenRouter speech engines — the only package that talks HTTP to OpenRouter.

Shape::

    stt.OpenRouterTranscriber ─┐                         ┌─ POST /audio/transcriptions (JSON + base64)
    tts.OpenRouterSynthesizer ─┤                         ├─ POST /audio/speech         (raw audio back)
    chat.OpenRouterChat       ─┼─ client.OpenRouterClient ┼─ POST /chat/completions     (text → text)
    models.list_models()      ─┤   headers, timeouts,     ├─ GET  /models?output_modalities=…
    models.validate_model()   ─┘   one retry policy,      └─ GET  /key                  (is the key good?)
                                   error mapping

* :mod:`.client`: auth, per-loop connection pools, the retry policy, the error mapping, request counting.
* :mod:`.models`: model metadata, capabilities (text-only models, input limits) and pricing.
* :mod:`.engine`: what both engines share (the client, the limiter hand-over, ``prepare``).
* :mod:`.stt`, :mod:`.tts` and :mod:`.chat`: the engines and how each reads its answers.
"""

from voxflow.engines.openrouter.chat import ChatReply, Message, OpenRouterChat
from voxflow.engines.openrouter.client import (
    MAX_RETRY_AFTER_S,
    OpenRouterClient,
    RequestCount,
    count_requests,
    error_for_status,
    parse_retry_after,
    redact,
    retry_policy,
)
from voxflow.engines.openrouter.models import (
    AUDIO_TOKENS_PER_SECOND,
    CHARS_PER_TOKEN,
    Kind,
    check_key,
    list_models,
    tts_input_limit,
    validate_model,
)
from voxflow.engines.openrouter.stt import OpenRouterTranscriber, parse_transcript
from voxflow.engines.openrouter.tts import OpenRouterSynthesizer, parse_audio_type

__all__ = [
    "AUDIO_TOKENS_PER_SECOND",
    "CHARS_PER_TOKEN",
    "MAX_RETRY_AFTER_S",
    "ChatReply",
    "Kind",
    "Message",
    "OpenRouterChat",
    "OpenRouterClient",
    "OpenRouterSynthesizer",
    "OpenRouterTranscriber",
    "RequestCount",
    "check_key",
    "count_requests",
    "error_for_status",
    "list_models",
    "parse_audio_type",
    "parse_retry_after",
    "parse_transcript",
    "redact",
    "retry_policy",
    "tts_input_limit",
    "validate_model",
]
