"""Lines of text translated through a chat model, line for line.

The lines go out numbered (``1. …``, ``2. …``) in batches that fit the model's context; the
answer must hold the same numbers, in order, one non-empty line each. An answer that loses,
merges or adds a line is asked again once; a second bad answer raises LinesMismatch, so a
caller never gets a translation whose lines do not pair with the originals.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from voxflow.engines.openrouter.chat import Message
from voxflow.engines.openrouter.models import CHARS_PER_TOKEN
from voxflow.errors import LinesMismatch

if TYPE_CHECKING:
    from voxflow.engines.openrouter.chat import OpenRouterChat
    from voxflow.limits import Budget

MAX_LINES_PER_BATCH = 60  # models keep numbering reliably over a few dozen lines
MAX_BATCH_CHARS = 12_000
ANSWER_GROWTH = 2.0  # room left for the answer: translations run longer than their source
ATTEMPTS = 2  # a reply with the wrong lines is asked again once
_NUMBERED = re.compile(r"^\s*(\d+)\s*[.)]\s?(.*)$")


@dataclass(frozen=True, slots=True)
class LinesTranslation:
    lines: tuple[str, ...]  # one per line given, same order
    cost_usd: float
    requests: int


def language_name(code: str) -> str:
    """``fr`` → ``French`` (the code itself when unknown)."""
    import langcodes

    try:
        return langcodes.Language.get(code).display_name()
    except (ValueError, LookupError):
        return code


def batches(lines: Sequence[str], context_tokens: int) -> list[range]:
    """Consecutive index ranges of ``lines``: each fits the context with room for its answer
    (a line longer than that still goes, alone)."""
    room = min(MAX_BATCH_CHARS, int(context_tokens * CHARS_PER_TOKEN / (1 + ANSWER_GROWTH)) - len(_system("xx", "yy")))
    ranges: list[range] = []
    start, size = 0, 0
    for i, line in enumerate(lines):
        cost = len(line) + 6  # "NN. " and the newline
        if i > start and (size + cost > room or i - start >= MAX_LINES_PER_BATCH):
            ranges.append(range(start, i))
            start, size = i, 0
        size += cost
    if start < len(lines):
        ranges.append(range(start, len(lines)))
    return ranges


@cache
def _system(source: str, target: str) -> str:
    source_name = "the original language" if source == "und" else f"{language_name(source)} ({source})"
    return (
        f"You translate subtitles from {source_name} into {language_name(target)}.\n"
        f"Target language: {target}\n"
        "Translate each numbered line on its own. Answer with exactly the same numbered lines, in the same "
        "order, one per line, as `N. translation`: never merge, split, add or leave out a line. "
        "Output only the numbered lines."
    )


def prompt(lines: Sequence[str], source: str, target: str) -> list[Message]:
    numbered = "\n".join(f"{n}. {' '.join(line.split())}" for n, line in enumerate(lines, start=1))
    return [Message("system", _system(source, target)), Message("user", numbered)]


def parse_numbered(content: str, expected: int) -> list[str]:
    """The texts of ``1. …`` to ``expected. …``, in order; LinesMismatch for anything else."""
    texts: list[str] = []
    for raw in content.strip().splitlines():
        if not raw.strip():
            continue
        match = _NUMBERED.match(raw)
        if match is None or int(match.group(1)) != len(texts) + 1 or not match.group(2).strip():
            raise LinesMismatch(f"sent {expected} numbered lines, the answer's line {len(texts) + 1} is {raw[:60]!r}")
        texts.append(match.group(2).strip())
    if len(texts) != expected:
        raise LinesMismatch(f"sent {expected} numbered lines, got {len(texts)} back")
    return texts


async def translate_lines(
    chat: OpenRouterChat, lines: Sequence[str], source: str, target: str, budget: Budget | None = None
) -> LinesTranslation:
    """``lines`` in ``target``, one for one (batches sent concurrently; the client's limiter
    bounds what is in flight)."""
    ranges = batches(lines, chat.context_tokens)
    parts = await asyncio.gather(
        *(_translate_batch(chat, [lines[i] for i in r], source, target, budget) for r in ranges),
        return_exceptions=True,
    )
    spent = sum(p.cost_usd for p in parts if isinstance(p, LinesTranslation | LinesMismatch))
    for part, lines_range in zip(parts, ranges, strict=True):
        if isinstance(part, LinesMismatch):
            where = f"lines {lines_range.start + 1}-{lines_range.stop}"
            raise LinesMismatch(f"translation to {target}, {where}: {part}", cost_usd=spent)
    for part in parts:
        if isinstance(part, BaseException):
            raise part
    parts = [p for p in parts if isinstance(p, LinesTranslation)]
    return LinesTranslation(
        lines=tuple(text for part in parts for text in part.lines),
        cost_usd=sum(p.cost_usd for p in parts),
        requests=sum(p.requests for p in parts),
    )


async def _translate_batch(
    chat: OpenRouterChat, lines: list[str], source: str, target: str, budget: Budget | None
) -> LinesTranslation:
    messages = prompt(lines, source, target)
    sent = sum(len(m.content) for m in messages)
    cost = 0.0
    for attempt in range(1, ATTEMPTS + 1):
        estimate = chat.estimate_cost(sent, round(sent * ANSWER_GROWTH / 2))
        if budget is None:
            reply = await chat.complete(messages, what=f"translation to {target}")
        else:
            async with budget.reserve(estimate) as reservation:
                reply = await chat.complete(messages, what=f"translation to {target}")
                reservation.settle(reply.cost_usd)
        cost += reply.cost_usd
        try:
            return LinesTranslation(tuple(parse_numbered(reply.content, len(lines))), cost, attempt)
        except LinesMismatch as exc:
            if attempt == ATTEMPTS:
                raise LinesMismatch(f"{exc} (asked {ATTEMPTS} times)", cost_usd=cost) from None
    raise AssertionError("unreachable")
