"""Text through OpenRouter chat: ``POST /chat/completions`` (OpenAI shape) and reading its answer.

Every request goes through the shared :class:`~voxflow.engines.openrouter.client.OpenRouterClient`
(retries, rate limiting, stop on Ctrl-C, error mapping); the answer's ``usage.cost`` is its
cost, estimated from the model's pricing when a provider leaves it out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from voxflow.engines.openrouter.client import json_object
from voxflow.engines.openrouter.engine import OpenRouterEngine
from voxflow.engines.openrouter.models import CHARS_PER_TOKEN, chat_cost
from voxflow.errors import BadResponse

Role = Literal["system", "user", "assistant"]
DEFAULT_CONTEXT_TOKENS = 8192  # when /models does not say


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ChatReply:
    """``choices[0].message.content`` of one completion, its token counts and cost."""

    content: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class OpenRouterChat(OpenRouterEngine):
    """Chat completions: one call, one reply (the client retries transient failures)."""

    kind = "text"

    @property
    def context_tokens(self) -> int:
        """The model's context length (prompt + completion), from ``GET /models``."""
        for value in (
            self.listing.get("context_length"),
            (self.listing.get("top_provider") or {}).get("context_length"),
        ):
            if isinstance(value, int) and value > 0:
                return value
        return DEFAULT_CONTEXT_TOKENS

    def estimate_cost(self, prompt_chars: int, completion_chars: int) -> float:
        """USD a completion of these sizes would cost (0.0 when the pricing is unknown)."""
        if not self.pricing:
            return 0.0
        return chat_cost(self.pricing, _tokens(prompt_chars), _tokens(completion_chars))

    async def complete(
        self, messages: Sequence[Message], *, response_format: Mapping[str, Any] | None = None, what: str = "chat"
    ) -> ChatReply:
        """The model's answer to ``messages``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": 0,
        }
        if response_format:
            body["response_format"] = dict(response_format)
        if self.provider:
            body["provider"] = self.provider
        data = await self.client.call("POST", "/chat/completions", json_object, body=body, what=f"{self.model} {what}")
        reply = parse_reply(data)
        if reply.cost_usd == 0.0 and "cost" not in (data.get("usage") or {}) and await self.load_pricing():
            cost = chat_cost(self.pricing or {}, reply.prompt_tokens, reply.completion_tokens)
            reply = ChatReply(reply.content, reply.prompt_tokens, reply.completion_tokens, cost)
        return reply


def parse_reply(data: Mapping[str, Any]) -> ChatReply:
    """A ChatReply from a chat-completions answer; BadResponse when it has no text content."""
    choices = data.get("choices")
    message = (
        choices[0].get("message") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    )
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise BadResponse("OpenRouter's chat answer has no choices[0].message.content text", transient=False)
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return ChatReply(
        content=content,
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        cost_usd=_cost(usage.get("cost")),
    )


def _tokens(chars: int) -> int:
    return math.ceil(max(0, chars) / CHARS_PER_TOKEN)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _cost(value: Any) -> float:
    try:
        cost = float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return cost if math.isfinite(cost) and cost > 0 else 0.0
