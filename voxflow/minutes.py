"""Meeting minutes from a timestamped transcript through a chat model: a summary, decisions and
action items (owner and due date when said), each citing the transcript's ``[mm:ss]`` times.

The transcript goes out one segment a line, ``[mm:ss] text``, and the model answers with one
JSON object (``response_format`` json_object), validated by pydantic. A transcript longer than
the model's context is map-reduced: parts that fit get partial minutes each, and those are
merged (in rounds, when even they do not fit at once) into one.

Invariant, checked on every answer: each cited time lies inside the recording and within
:data:`CITE_SLACK_MS` of a transcript segment. An answer that is not valid JSON, or cites a
moment that does not exist, is asked again once; after that, a point citing nothing real is
dropped with a warning (and an impossible time in the summary's text is taken out), so written
minutes never cite a moment that is not in the transcript.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voxflow.engines.openrouter.chat import Message
from voxflow.engines.openrouter.models import CHARS_PER_TOKEN
from voxflow.errors import MinutesInvalid

if TYPE_CHECKING:
    from voxflow.engines.openrouter.chat import OpenRouterChat
    from voxflow.limits import Budget
    from voxflow.models import Segment

ATTEMPTS = 2  # an invalid answer, or one citing a moment that does not exist, is asked again once
CITE_SLACK_MS = 3000  # a cited time this close to a segment points at it
ANSWER_SHARE = 0.4  # of the context, left for the answer
JSON_FORMAT = {"type": "json_object"}
TIMESTAMP = re.compile(r"\[((?:\d+:)?\d{1,2}:\d{2})\]")
_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")

_SHAPE = (
    'Answer with minutes JSON only, one object: {"summary": "…", "decisions": [{"text": "…", "cites": ["mm:ss"]}], '
    '"action_items": [{"text": "…", "owner": "… or null", "due": "… or null", "cites": ["mm:ss"]}]}. '
    "Every decision and action item cites the timestamps of the lines it comes from, exactly as written there "
    "(mm:ss or h:mm:ss); cite only timestamps that appear below. Owner and due date only when they are said, "
    "else null. The summary is a few sentences and may cite timestamps as [mm:ss]."
)
MAP_SYSTEM = "You write meeting minutes from a part of a meeting's timestamped transcript, one line each.\n" + _SHAPE
REDUCE_SYSTEM = (
    "You merge the partial minutes of consecutive parts of one meeting into the minutes of the whole meeting: "
    "one summary, decisions and action items without repeats, each line given as its timestamps then its point.\n"
    + _SHAPE
)


class Point(BaseModel):
    """A decision (or the base of an action item) and the transcript times it cites."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    text: str = Field(min_length=1)
    cites: tuple[str, ...] = ()


class ActionItem(Point):
    owner: str | None = None
    due: str | None = None


class MinutesReply(BaseModel):
    """The JSON object the model answers with."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    summary: str
    decisions: tuple[Point, ...] = ()
    action_items: tuple[ActionItem, ...] = ()


@dataclass
class Tally:
    """What the calls for one recording's minutes cost, and what was dropped on the way."""

    cost_usd: float = 0.0
    requests: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Minutes:
    summary: str
    decisions: tuple[Point, ...]
    action_items: tuple[ActionItem, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "summary": self.summary,
            "decisions": [p.model_dump() for p in self.decisions],
            "action_items": [a.model_dump() for a in self.action_items],
        }


def format_ts(ms: int) -> str:
    """``83_000`` → ``01:23``; ``3_723_000`` → ``1:02:03`` (whole seconds, rounded down)."""
    hours, rest = divmod(max(0, ms) // 1000, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def parse_ts(text: str) -> int | None:
    """``01:23`` / ``[1:02:03]`` → milliseconds; None when it is not such a time."""
    parts = text.strip().strip("[]").split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts) or any(int(p) >= 60 for p in parts[1:]):
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds * 1000


def transcript_lines(segments: Sequence[Segment]) -> list[str]:
    """One ``[mm:ss] text`` line per segment with text (speaker first when labelled)."""
    lines = []
    for seg in segments:
        text = " ".join(seg.text.split())
        if text:
            who = f"{seg.speaker}: " if seg.speaker else ""
            lines.append(f"[{format_ts(seg.start_ms)}] {who}{text}")
    return lines


def part_room(context_tokens: int, system: str) -> int:
    """Characters of transcript (or partial minutes) one request can carry."""
    return max(200, int(context_tokens * CHARS_PER_TOKEN * (1 - ANSWER_SHARE)) - len(system))


def split_lines(lines: Sequence[str], room: int) -> list[list[str]]:
    """Consecutive groups of ``lines`` of at most ``room`` characters (a longer line goes alone)."""
    groups: list[list[str]] = []
    size = 0
    for line in lines:
        if not groups or (size + len(line) + 1 > room and groups[-1]):
            groups.append([])
            size = 0
        groups[-1].append(line)
        size += len(line) + 1
    return groups


@dataclass(frozen=True)
class Moments:
    """The moments a citation may point at: the recording's duration and its segments."""

    duration_ms: int
    spans: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, segments: Sequence[Segment], duration_ms: int) -> Moments:
        return cls(duration_ms, tuple((s.start_ms, s.end_ms) for s in segments if s.text.strip()))

    def exists(self, cite: str) -> bool:
        ms = parse_ts(cite)
        if ms is None or not 0 <= ms <= self.duration_ms:
            return False
        return any(start - CITE_SLACK_MS <= ms <= end + CITE_SLACK_MS for start, end in self.spans)


def checked(reply: MinutesReply, moments: Moments) -> tuple[Minutes, list[str]]:
    """The reply with every citation that does not exist taken out (and points left citing
    nothing dropped), and a note on each thing taken out."""
    problems: list[str] = []

    def keep(point: Point, kind: str) -> bool:
        bad = [c for c in point.cites if not moments.exists(c)]
        if bad:
            problems.append(f"{kind} {point.text[:60]!r} cites {', '.join(bad)}: not in the transcript")
        elif not point.cites:
            problems.append(f"{kind} {point.text[:60]!r} cites no timestamp")
        return bool(point.cites) and not bad

    def scrub(text: str | None, where: str) -> str | None:
        """``text`` without the bracketed times in it that do not exist."""
        for cite in TIMESTAMP.findall(text or ""):
            if not moments.exists(cite):
                problems.append(f"{where} cites {cite}: not in the transcript")
                text = (text or "").replace(f"[{cite}]", "")
        return " ".join(text.split()) if text is not None else None

    def cleaned(point: Point) -> Point:
        fields = {
            "text": scrub(point.text, "a point's text"),
            "cites": tuple(c.strip().strip("[]") for c in point.cites),
        }
        if isinstance(point, ActionItem):
            fields |= {"owner": scrub(point.owner, "an owner"), "due": scrub(point.due, "a due date")}
        return point.model_copy(update=fields)

    decisions = tuple(cleaned(p) for p in reply.decisions if keep(p, "decision"))
    actions = tuple(cleaned(a) for a in reply.action_items if keep(a, "action item"))
    summary = scrub(reply.summary, "the summary") or ""
    return Minutes(summary, decisions, actions), problems


def parse_reply(content: str) -> MinutesReply:
    """The answer as MinutesReply; MinutesInvalid when it is not minutes JSON."""
    try:
        return MinutesReply.model_validate_json(_FENCE.sub("", content))
    except ValidationError as exc:
        raise MinutesInvalid(f"the answer is not minutes JSON ({exc.errors()[0]['msg']})", transient=False) from None


def partial_lines(minutes: Minutes, first_cite: str) -> list[str]:
    """Partial minutes as the reduce step's input: each point after its timestamps."""
    lines = [f"[{first_cite}] summary: {minutes.summary}"]
    lines += [f"{_cites(p)} decision: {p.text}" for p in minutes.decisions]
    for a in minutes.action_items:
        extra = "".join(f"; {k}: {v}" for k, v in (("owner", a.owner), ("due", a.due)) if v)
        lines.append(f"{_cites(a)} action: {a.text}{extra}")
    return lines


def _cites(point: Point) -> str:
    return " ".join(f"[{c.strip('[]')}]" for c in point.cites)


async def make_minutes(
    chat: OpenRouterChat,
    segments: Sequence[Segment],
    duration_ms: int,
    tally: Tally,
    budget: Budget | None = None,
) -> Minutes:
    """The minutes of a transcript: one call when it fits the model's context, else a map over
    parts that fit and reduce rounds over their partial minutes (calls sent concurrently; the
    client's limiter bounds what is in flight). Costs and dropped points go into ``tally``."""
    moments = Moments.of(segments, duration_ms)
    lines = transcript_lines(segments)
    parts = split_lines(lines, part_room(chat.context_tokens, MAP_SYSTEM))
    partials = await asyncio.gather(*(_ask(chat, MAP_SYSTEM, p, moments, tally, budget) for p in parts))
    firsts = [TIMESTAMP.match(p[0]).group(1) for p in parts]  # type: ignore[union-attr]
    while len(partials) > 1:
        inputs = [partial_lines(m, first) for m, first in zip(partials, firsts, strict=True)]
        groups = _group_partials(inputs, part_room(chat.context_tokens, REDUCE_SYSTEM))
        partials = await asyncio.gather(
            *(_ask(chat, REDUCE_SYSTEM, [ln for i in g for ln in inputs[i]], moments, tally, budget) for g in groups)
        )
        firsts = [firsts[g[0]] for g in groups]
    return partials[0]


def _group_partials(inputs: list[list[str]], room: int) -> list[list[int]]:
    """Indexes of consecutive partial minutes merged together: as many as fit, never one alone
    (so each round has fewer)."""
    groups: list[list[int]] = []
    size = 0
    for i, lines in enumerate(inputs):
        cost = sum(len(line) + 1 for line in lines)
        if groups and (len(groups[-1]) < 2 or size + cost <= room):
            groups[-1].append(i)
            size += cost
        else:
            groups.append([i])
            size = cost
    if len(groups) > 1 and len(groups[-1]) == 1:
        groups[-2] += groups.pop()
    return groups


async def _ask(
    chat: OpenRouterChat, system: str, lines: list[str], moments: Moments, tally: Tally, budget: Budget | None
) -> Minutes:
    """One request (asked again once when the answer is invalid or cites what is not there)."""
    messages = [Message("system", system), Message("user", "\n".join(lines))]
    sent = sum(len(m.content) for m in messages)
    for attempt in range(1, ATTEMPTS + 1):
        content = await _complete(chat, messages, sent, tally, budget)
        try:
            minutes, problems = checked(parse_reply(content), moments)
        except MinutesInvalid as exc:
            if attempt == ATTEMPTS:
                raise MinutesInvalid(f"{exc} (asked {ATTEMPTS} times)", transient=False) from None
            continue
        if not problems or attempt == ATTEMPTS:
            tally.warnings += [f"dropped: {p}" for p in problems]
            return minutes
    raise AssertionError("unreachable")


async def _complete(
    chat: OpenRouterChat, messages: list[Message], sent: int, tally: Tally, budget: Budget | None
) -> str:
    tally.requests += 1
    if budget is None:
        reply = await chat.complete(messages, response_format=JSON_FORMAT, what="minutes")
    else:
        estimate = chat.estimate_cost(sent, round(sent * ANSWER_SHARE))
        async with budget.reserve(estimate) as reservation:
            reply = await chat.complete(messages, response_format=JSON_FORMAT, what="minutes")
            reservation.settle(reply.cost_usd)
    tally.cost_usd += reply.cost_usd
    return reply.content


def render_markdown(minutes: Minutes, title: str, model: str) -> str:
    """``<stem>.minutes.md``: summary, decisions, action items, each with its ``[mm:ss]`` cites."""
    out = [f"# Minutes: {title}", "", f"Model: {model}", "", "## Summary", "", minutes.summary or "(none)", ""]
    out += ["## Decisions", ""]
    out += [f"- {_one_line(p.text)} {_cites(p)}" for p in minutes.decisions] or ["- (none)"]
    out += ["", "## Action items", ""]
    for a in minutes.action_items:
        who = "".join(f" — {k}: {_one_line(v)}" for k, v in (("owner", a.owner), ("due", a.due)) if v)
        out.append(f"- {_one_line(a.text)}{who} {_cites(a)}")
    if not minutes.action_items:
        out.append("- (none)")
    return "\n".join(out) + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def as_json_text(points: Sequence[Point]) -> str:
    return json.dumps([p.model_dump() for p in points], ensure_ascii=False)
