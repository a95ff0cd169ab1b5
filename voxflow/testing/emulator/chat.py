"""``POST /chat/completions`` without the HTTP: the request validated as OpenRouter does (OpenAI
shape), a deterministic answer, and the body with ``choices`` and ``usage``.

The answer is a checkable transformation of the input, so tests know exactly what to expect:

* **translation** — when a message says ``Target language: <code>`` (voxflow's translation
  prompt does) and the last user message holds numbered lines ``N. text``, the answer is the
  same numbered lines, in order, each text prefixed with ``[<code>] ``: ``3. Hello`` →
  ``3. [fr] Hello``. Reversible: strip the prefix and the original line is back.
  ``lose_line_for`` / ``lose_line_limit`` make such an answer lose its last line.
* **minutes** — when a system message asks for ``minutes JSON`` (voxflow's minutes prompt
  does), the answer is that JSON object built from the last user message's lines that start
  with a timestamp (``[mm:ss] …`` or ``[h:mm:ss] …``): the summary is ``Discussed: <text of
  the first such line> [<its time>]``; one decision ``Decided: <text of the middle line>``
  citing the middle line's time; one action item ``Follow up: <text of the last line>``,
  owner ``Alex``, due ``Friday``, citing the last line's time. Every cited time is one the
  prompt holds. ``bad_cites=N`` makes the first N such answers cite ``59:59`` for the action
  item instead, a time the prompt does not hold (``bad_cites=None``: every answer);
  ``prose_minutes=N`` makes the first N answer in prose instead of JSON (None: every one).
* **anything else** — ``[emulator] `` followed by the last user message's first line.

``usage`` counts tokens as characters / 4 (rounded up) and bills them at the model's prices.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from voxflow.testing.emulator.config import ChatModel
from voxflow.testing.emulator.protocol import Problem

CHARS_PER_TOKEN = 4
NUMBERED = re.compile(r"^\s*(\d+)\.\s?(.*)$")
STAMPED = re.compile(r"^\s*\[((?:\d+:)?\d{1,2}:\d{2})\]\s*(.*)$")
MINUTES_MARK = "minutes JSON"
IMPOSSIBLE_CITE = "59:59"
TARGET = re.compile(r"Target language:\s*([A-Za-z]{2,3})\b")
ROLES = frozenset({"system", "user", "assistant", "developer", "tool"})
RESPONSE_TYPES = frozenset({"text", "json_object", "json_schema"})


def chat_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """The request's messages (role + text content), or a 400 naming what is wrong."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Problem(400, "'messages' must be a non-empty list of {role, content}")
    checked = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise Problem(400, f"each message needs a role, one of {', '.join(sorted(ROLES))}")
        content = m.get("content")
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if not isinstance(content, str):
            raise Problem(400, "a message's 'content' must be a string or a list of content parts")
        checked.append({"role": m["role"], "content": content})
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict) or response_format.get("type") not in RESPONSE_TYPES
    ):
        raise Problem(
            400, f"'response_format' must be an object with a type, one of {', '.join(sorted(RESPONSE_TYPES))}"
        )
    return checked


def prompt_tokens(messages: list[dict[str, str]]) -> int:
    return tokens("".join(m["content"] for m in messages))


def tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def check_context(messages: list[dict[str, str]], model: ChatModel) -> int:
    """The prompt's tokens; a 400 when they pass the model's context length."""
    used = prompt_tokens(messages)
    if used > model.context_length:
        raise Problem(
            400,
            f"This endpoint's maximum context length is {model.context_length} tokens. "
            f"However, you requested about {used} tokens. Please reduce the length of the messages.",
        )
    return used


def translation_target(messages: list[dict[str, str]]) -> str | None:
    """The ``Target language: xx`` a message names, if the last user message has numbered lines."""
    found = next((m for text in _texts(messages) if (m := TARGET.search(text))), None)
    if found is None or not numbered_lines(last_user(messages)):
        return None
    return found.group(1).lower()


def _texts(messages: list[dict[str, str]]) -> list[str]:
    return [m["content"] for m in messages]


def last_user(messages: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


def numbered_lines(text: str) -> list[tuple[int, str]]:
    """``N. text`` lines of ``text`` (other lines ignored)."""
    return [(int(m.group(1)), m.group(2)) for line in text.splitlines() if (m := NUMBERED.match(line))]


def translated(messages: list[dict[str, str]], target: str, lose_a_line: bool) -> str:
    """The numbered lines, each text prefixed with ``[target] `` (the last one gone when asked)."""
    lines = [f"{n}. [{target}] {text}" for n, text in numbered_lines(last_user(messages))]
    return "\n".join(lines[:-1] if lose_a_line else lines)


def asks_for_minutes(messages: list[dict[str, str]]) -> bool:
    return any(MINUTES_MARK in m["content"] for m in messages if m["role"] in ("system", "developer"))


def stamped_lines(text: str) -> list[tuple[str, str]]:
    """(time, text) of the lines of ``text`` that start with ``[mm:ss]`` / ``[h:mm:ss]``."""
    return [(m.group(1), m.group(2).strip()) for line in text.splitlines() if (m := STAMPED.match(line))]


def minutes(messages: list[dict[str, str]], bad_cite: bool, prose: bool = False) -> str:
    """The minutes JSON built from the prompt's timestamped lines (see the module docstring);
    ``prose``: the same told in sentences, as a model that ignores the JSON request would."""
    lines = stamped_lines(last_user(messages)) or [("00:00", "")]
    (first_at, first), (middle_at, middle), (last_at, last) = lines[0], lines[len(lines) // 2], lines[-1]
    answer = {
        "summary": f"Discussed: {_plain(first)} [{first_at}]",
        "decisions": [{"text": f"Decided: {_plain(middle)}", "cites": [middle_at]}],
        "action_items": [
            {
                "text": f"Follow up: {_plain(last)}",
                "owner": "Alex",
                "due": "Friday",
                "cites": [IMPOSSIBLE_CITE if bad_cite else last_at],
            }
        ],
    }
    if prose:
        return f"Here are the minutes. {answer['summary']} {answer['decisions'][0]['text']}."
    return json.dumps(answer)


def _plain(text: str) -> str:
    """A line's text without the timestamps in it (the reduce step's lines carry several)."""
    return " ".join(re.sub(r"\[(?:\d+:)?\d{1,2}:\d{2}\]", " ", text).split())


def echoed(messages: list[dict[str, str]]) -> str:
    first = last_user(messages).strip().splitlines()
    return "[emulator] " + (first[0] if first else "")


def completion_body(model: ChatModel, content: str, used_prompt: int, generation: str, created: int) -> dict[str, Any]:
    """The OpenAI-shaped answer with OpenRouter's ``usage.cost``."""
    completion = tokens(content)
    cost = used_prompt * model.prompt_price + completion * model.completion_price
    return {
        "id": generation,
        "object": "chat.completion",
        "created": created,
        "model": model.id,
        "provider": "voxflow-emulator",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"},
        ],
        "usage": {
            "prompt_tokens": used_prompt,
            "completion_tokens": completion,
            "total_tokens": used_prompt + completion,
            "cost": round(cost, 10),
        },
    }
