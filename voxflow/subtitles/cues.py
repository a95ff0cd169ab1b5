"""Cue shaping: engine segments → reading-sized cues (≤ 2 lines of 42 characters, ≈ 17 cps,
1–7 s, never overlapping, never 0 ms), computed once for every format."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from voxflow.models import Cue, Segment, Word

PAUSE_MS = 500  # a gap between words at least this long is a good place to break
PARAGRAPH_PAUSE_MS = 2000  # TXT: a gap between segments this long starts a paragraph
PARAGRAPH_CHARS = 600  # TXT: a paragraph this long ends at the next sentence end

_CLOSERS = "\"'”’»)]}"
SENTENCE_END = re.compile(rf"[.?!…][{re.escape(_CLOSERS)}]*$")
_CLAUSE_END = re.compile(rf"[,;:—–][{re.escape(_CLOSERS)}]*$")
_PUNCT_ONLY = re.compile(rf"[.,!?;:…%{re.escape(_CLOSERS)}]+")

# Costs the cue partition minimises: fewer cues, breaks at good places.
_CUE_COST = 4.0
_BREAK_COST = {"end": 0.0, "sentence": 0.0, "pause": 0.0, "segment": 1.5, "clause": 2.0}
_WORD_BREAK_COST = 6.0
_INNER_PAUSE_COST_PER_S = 3.0
_CPS_COST, _CPS_COST_CAP = 2.0, 6.0


# --------------------------------------------------------------------------- shaping


@dataclass(frozen=True, slots=True)
class _Token:
    """One unbreakable word with its (sanitised) time and speaker."""

    start_ms: int
    end_ms: int
    text: str
    speaker: str | None
    segment: int


@dataclass(frozen=True, slots=True)
class _Limits:
    max_line_chars: int
    max_lines: int
    max_cps: float
    min_cue_ms: int
    max_cue_ms: int
    min_gap_ms: int
    duration_ms: int

    def check(self) -> None:
        if self.max_line_chars < 1 or self.max_lines < 1:
            raise ValueError("max_line_chars and max_lines must be at least 1")
        if self.max_cps <= 0:
            raise ValueError("max_cps must be positive")
        if not 0 <= self.min_cue_ms <= self.max_cue_ms or self.max_cue_ms < 1:
            raise ValueError("need 0 <= min_cue_ms <= max_cue_ms and max_cue_ms >= 1")
        if self.min_gap_ms < 0:
            raise ValueError("min_gap_ms must not be negative")

    def needed_ms(self, chars: int) -> int:
        """Display time ``chars`` characters need at ``max_cps``."""
        return math.ceil(chars * 1000 / self.max_cps)


def shape_cues(
    segments: Sequence[Segment],
    duration_ms: int,
    *,
    max_line_chars: int = 42,
    max_lines: int = 2,
    max_cps: float = 17.0,
    min_cue_ms: int = 1000,
    max_cue_ms: int = 7000,
    min_gap_ms: int = 0,
) -> list[Cue]:
    """Cut segments into ordered, non-overlapping cues shaped for reading.

    Each cue holds one speaker's words, at most ``max_lines`` balanced lines of at most
    ``max_line_chars`` (a longer single word gets a line of its own) and spans at most
    ``max_cue_ms`` of speech (a single longer word excepted). Cues break preferably at
    sentence ends and pauses, then at clause punctuation, never inside a word. Ends are
    extended into the following silence towards ``max_cps`` and ``min_cue_ms``; a cue still
    shorter than ``min_cue_ms`` starts earlier into the silence before it. Times are
    clamped to ``[0, duration_ms]``; ``min_gap_ms`` is kept where the words allow.
    Words are taken from ``Segment.words`` when present, otherwise the segment's time is
    spread over its text by characters.
    """
    limits = _Limits(
        max_line_chars=max_line_chars,
        max_lines=max_lines,
        max_cps=max_cps,
        min_cue_ms=min_cue_ms,
        max_cue_ms=max_cue_ms,
        min_gap_ms=min_gap_ms,
        duration_ms=max(duration_ms, 0),
    )
    limits.check()
    tokens = _sanitise(_tokens(segments), limits.duration_ms)
    if not tokens:
        return []
    spans = _partition(tokens, limits)
    spoken = [(tokens[i].start_ms, tokens[j - 1].end_ms) for i, j in spans]
    return _give_short_cues_room(_time_cues(tokens, spans, limits), spoken, limits)


def _tokens(segments: Sequence[Segment]) -> list[_Token]:
    """All words of all segments, in order, as raw (unsanitised) tokens."""
    out: list[_Token] = []
    for index, seg in enumerate(segments):
        if any(w.word.strip() for w in seg.words):
            out.extend(_word_tokens(seg, index))
        else:
            out.extend(_spread_text(seg, index))
    return out


def _word_tokens(seg: Segment, index: int) -> list[_Token]:
    """Tokens from a segment's words, gluing pieces that are not words of their own.

    When the engine marks word starts with a leading space (whisper does), a piece
    without one continues the previous word; otherwise punctuation-only words
    (``","``, ``"?"``) are glued to the word before them.
    """
    words = [w for w in seg.words if w.word.strip()]
    spaced = any(w.word[:1].isspace() for w in words[1:])
    out: list[_Token] = []
    for w in words:
        text = w.word.strip()
        glue = not w.word[:1].isspace() if spaced else bool(_PUNCT_ONLY.fullmatch(text))
        pieces = _split_word(w, text, seg.speaker, index)
        if out and glue:
            last, first = out[-1], pieces.pop(0)
            out[-1] = _Token(
                last.start_ms,
                max(last.end_ms, first.end_ms),
                last.text + first.text,
                last.speaker,
                index,
            )
        out.extend(pieces)
    return out


def _split_word(w: Word, text: str, default_speaker: str | None, index: int) -> list[_Token]:
    """One word as tokens (several when its text holds whitespace)."""
    speaker = w.speaker if w.speaker is not None else default_speaker
    return _spread(text.split(), w.start_ms, w.end_ms, speaker, index)


def _spread_text(seg: Segment, index: int) -> list[_Token]:
    """A segment without words: its time shared over its words by characters."""
    return _spread(seg.text.split(), seg.start_ms, seg.end_ms, seg.speaker, index)


def _spread(parts: list[str], start_ms: int, end_ms: int, speaker: str | None, index: int) -> list[_Token]:
    """Tokens for ``parts`` sharing ``[start_ms, end_ms]`` in proportion to length."""
    end_ms = max(end_ms, start_ms)
    total = sum(len(p) for p in parts) + max(len(parts) - 1, 0)
    out, pos = [], 0
    for part in parts:
        t0 = start_ms + (end_ms - start_ms) * pos // max(total, 1)
        pos += len(part)
        t1 = start_ms + (end_ms - start_ms) * pos // max(total, 1)
        pos += 1
        out.append(_Token(t0, t1, part, speaker, index))
    return out


def _sanitise(tokens: list[_Token], duration_ms: int) -> list[_Token]:
    """Clamp to the recording and make times monotonic: start <= end <= next start."""
    starts, prev = [], 0
    for tok in tokens:
        prev = max(prev, min(max(tok.start_ms, 0), duration_ms))
        starts.append(prev)
    out = []
    for k, tok in enumerate(tokens):
        nxt = starts[k + 1] if k + 1 < len(tokens) else duration_ms
        end = min(max(tok.end_ms, starts[k]), nxt)
        out.append(_Token(starts[k], end, tok.text, tok.speaker, tok.segment))
    return out


def _break_kind(tokens: list[_Token], j: int) -> str:
    """What kind of boundary lies between token ``j - 1`` and token ``j``."""
    if j >= len(tokens) or tokens[j].speaker != tokens[j - 1].speaker:
        return "end"
    if SENTENCE_END.search(tokens[j - 1].text):
        return "sentence"
    if tokens[j].start_ms - tokens[j - 1].end_ms >= PAUSE_MS:
        return "pause"
    if tokens[j].segment != tokens[j - 1].segment:
        return "segment"
    if _CLAUSE_END.search(tokens[j - 1].text):
        return "clause"
    return "word"


def _break_cost(tokens: list[_Token], j: int) -> float:
    return _BREAK_COST.get(_break_kind(tokens, j), _WORD_BREAK_COST)


class _LineCounter:
    """Fewest lines a word sequence needs, updated as words are prepended.

    Filling lines greedily from the back is optimal; a word longer than a line sits
    on a line of its own.
    """

    def __init__(self, width: int) -> None:
        self.width, self.lines, self.cur = width, 0, 0.0

    def prepend(self, text: str) -> int:
        n = len(text)
        if self.lines and n <= self.width and self.cur + 1 + n <= self.width:
            self.cur += 1 + n
        else:
            self.lines += 1
            self.cur = n if n <= self.width else math.inf
        return self.lines


def _partition(tokens: list[_Token], limits: _Limits) -> list[tuple[int, int]]:
    """Cheapest split of ``tokens`` into cues, as ``(first, past_last)`` index pairs."""
    n = len(tokens)
    best = [0.0] + [math.inf] * n
    back = [0] * (n + 1)
    for j in range(1, n + 1):
        counter = _LineCounter(limits.max_line_chars)
        chars, inner = -1, 0.0
        for i in range(j - 1, -1, -1):
            tok = tokens[i]
            if tok.speaker != tokens[j - 1].speaker:
                break
            if counter.prepend(tok.text) > limits.max_lines:
                break
            if i < j - 1:
                if tokens[j - 1].end_ms - tok.start_ms > limits.max_cue_ms:
                    break
                inner += _inner_pause_cost(tok.end_ms, tokens[i + 1].start_ms)
            chars += len(tok.text) + 1
            cost = best[i] + _cue_cost(tokens, i, j, chars, limits) + inner
            if cost < best[j]:
                best[j], back[j] = cost, i
        best[j] += _break_cost(tokens, j)
    spans, j = [], n
    while j > 0:
        spans.append((back[j], j))
        j = back[j]
    return spans[::-1]


def _inner_pause_cost(end_ms: int, next_start_ms: int) -> float:
    gap = next_start_ms - end_ms
    return _INNER_PAUSE_COST_PER_S * gap / 1000 if gap >= PAUSE_MS else 0.0


def _cue_cost(tokens: list[_Token], i: int, j: int, chars: int, limits: _Limits) -> float:
    """Fixed cost per cue, a little for fullness (favours even cues), more for speed."""
    capacity = limits.max_line_chars * limits.max_lines
    start = tokens[i].start_ms
    room = _end_limit(tokens, j, limits)
    available = max(min(room, start + limits.max_cue_ms) - start, 1)
    overspeed = limits.needed_ms(chars) / available - 1
    speed = min(_CPS_COST * max(overspeed, 0.0), _CPS_COST_CAP)
    return _CUE_COST + (chars / capacity) ** 2 + speed


def _end_limit(tokens: list[_Token], j: int, limits: _Limits) -> int:
    """Latest end for a cue whose last token is ``j - 1``."""
    if j >= len(tokens):
        return limits.duration_ms
    return min(tokens[j].start_ms - limits.min_gap_ms, limits.duration_ms)


def _time_cues(tokens: list[_Token], spans: list[tuple[int, int]], limits: _Limits) -> list[Cue]:
    """Cues for the chosen spans, ends extended for reading, never overlapping."""
    cues: list[Cue] = []
    for i, j in spans:
        words = [t.text for t in tokens[i:j]]
        start, words_end = tokens[i].start_ms, tokens[j - 1].end_ms
        want = min(max(limits.min_cue_ms, limits.needed_ms(len(" ".join(words)))), limits.max_cue_ms)
        end = max(words_end, min(start + want, _end_limit(tokens, j, limits)))
        if end - start < limits.min_cue_ms:
            earliest = cues[-1].end_ms + limits.min_gap_ms if cues else 0
            start = min(start, max(earliest, end - limits.min_cue_ms))
        text = wrap_lines(words, limits.max_line_chars)
        cues.append(Cue(start, end, text, tokens[i].speaker))
    return cues


def _give_short_cues_room(cues: list[Cue], spoken: list[tuple[int, int]], limits: _Limits) -> list[Cue]:
    """No cue stays shorter than ``min_cue_ms`` while it can grow into silence, join a touching
    neighbour (speaker, lines and length allow) or take a touching neighbour's time beyond both
    ``min_cue_ms`` and that neighbour's own words; none stays 0 ms while the recording has room.

    ``spoken[k]`` is (first word's start, last word's end) of cue ``k``, kept in step.
    """
    for _ in range(4 * len(cues) + 1):  # each round grows, joins or lends; bounded anyway
        before = list(cues)
        k = 0
        while k < len(cues):
            if _span(cues[k]) >= min(limits.min_cue_ms, limits.duration_ms):
                k += 1
                continue
            cues[k] = _into_silence(cues, k, limits)
            if _span(cues[k]) >= min(limits.min_cue_ms, limits.duration_ms):
                continue
            joined = _join_neighbour(cues, spoken, k, limits)
            if joined is not None:
                k = max(joined - 1, 0)
                continue
            _borrow(cues, spoken, k, limits.min_cue_ms, limits)
            if _span(cues[k]) == 0:
                _borrow(cues, spoken, k, 0, limits)
            if _span(cues[k]) == 0:
                _shift_one_ms(cues, k)
            k += 1
        if cues == before:
            break
    return cues


def _span(cue: Cue) -> int:
    return cue.end_ms - cue.start_ms


def _touching(cues: list[Cue], k: int) -> bool:
    """Whether cue ``k`` ends where cue ``k + 1`` starts (no silence between them to use)."""
    return 0 <= k < len(cues) - 1 and cues[k].end_ms >= cues[k + 1].start_ms


def _join_neighbour(cues: list[Cue], spoken: list[tuple[int, int]], k: int, limits: _Limits) -> int | None:
    """Merge cue ``k`` into a touching neighbour when one cue can hold both; the merged index."""
    for a in (k - 1, k):
        if not _touching(cues, a):
            continue
        first, second = cues[a], cues[a + 1]
        words = first.text.split() + second.text.split()
        text = wrap_lines(words, limits.max_line_chars)
        fits = text.count("\n") < limits.max_lines and all(len(w) <= limits.max_line_chars for w in words)
        if first.speaker == second.speaker and fits and second.end_ms - first.start_ms <= limits.max_cue_ms:
            cues[a : a + 2] = [Cue(first.start_ms, second.end_ms, text, first.speaker)]
            spoken[a : a + 2] = [(spoken[a][0], spoken[a + 1][1])]
            return a
    return None


def _borrow(cues: list[Cue], spoken: list[tuple[int, int]], k: int, keep_ms: int, limits: _Limits) -> None:
    """Move cue ``k``'s edges into touching neighbours, never into their words, leaving each
    at least ``keep_ms`` (with ``keep_ms`` 0: at most half of the neighbour's time)."""
    for j in (k - 1, k + 1):
        if not _touching(cues, min(j, k)):
            continue
        other, cue, gap = cues[j], cues[k], limits.min_gap_ms
        need = max(keep_ms, 1) - _span(cue)
        spare = _span(other) - keep_ms if keep_ms else _span(other) // 2
        if j < k:  # the neighbour ends before its last word's end + the gap
            take = min(need, spare, cue.start_ms - gap - spoken[j][1])
            if take > 0:
                start = cue.start_ms - take
                cues[j] = replace(other, end_ms=min(other.end_ms, start - gap))
                cues[k] = replace(cue, start_ms=start)
        else:  # the neighbour starts after the cue's new end + the gap, by its first word
            take = min(need, spare, spoken[j][0] - gap - cue.end_ms)
            if take > 0:
                end = cue.end_ms + take
                cues[j] = _extended(cues, j, replace(other, start_ms=max(other.start_ms, end + gap)), limits)
                cues[k] = replace(cue, end_ms=end)


def _shift_one_ms(cues: list[Cue], k: int) -> None:
    """Give a 0 ms cue one millisecond from the nearest cue of its touching run that has two,
    shifting the cues between by 1 ms (only crammed input, with 0 ms words, gets here)."""
    for j in sorted(range(len(cues)), key=lambda i: abs(i - k)):
        lo, hi = min(j, k), max(j, k)
        if _span(cues[j]) < 2 or not all(_touching(cues, i) for i in range(lo, hi)):
            continue
        step = -1 if j < k else 1
        for i in range(lo, hi):  # the boundary between i and i + 1 moves by ``step``
            cues[i] = replace(cues[i], end_ms=cues[i].end_ms + step)
            cues[i + 1] = replace(cues[i + 1], start_ms=cues[i + 1].start_ms + step)
        return


def _into_silence(cues: list[Cue], k: int, limits: _Limits) -> Cue:
    """Cue ``k`` grown into the silence after it, then before it, towards ``min_cue_ms``."""
    cue = _extended(cues, k, cues[k], limits)
    earliest = cues[k - 1].end_ms + limits.min_gap_ms if k else 0
    start = max(min(cue.start_ms, cue.end_ms - limits.min_cue_ms), min(earliest, cue.start_ms))
    return replace(cue, start_ms=start)


def _extended(cues: list[Cue], j: int, cue: Cue, limits: _Limits) -> Cue:
    """``cue`` (at index ``j``) with its end moved into the silence after it, towards the
    time its text needs, as ``_time_cues`` does."""
    room = cues[j + 1].start_ms - limits.min_gap_ms if j + 1 < len(cues) else limits.duration_ms
    want = min(max(limits.min_cue_ms, limits.needed_ms(len(cue.text.replace("\n", " ")))), limits.max_cue_ms)
    return replace(cue, end_ms=max(cue.end_ms, min(cue.start_ms + want, room, limits.duration_ms)))


def wrap_lines(words: Sequence[str], max_line_chars: int = 42) -> str:
    """Words on the fewest lines that fit, balanced: the longest line is minimised.

    A word longer than ``max_line_chars`` gets a line of its own.
    """
    counter = _LineCounter(max_line_chars)
    for w in reversed(words):
        counter.prepend(w)
    n_lines = max(counter.lines, 1)
    cuts = _balanced_cuts(list(words), n_lines, max_line_chars)
    return "\n".join(" ".join(words[a:b]) for a, b in itertools.pairwise(cuts))


def _balanced_cuts(words: list[str], n_lines: int, width: int) -> list[int]:
    """Line boundaries for ``n_lines`` valid lines minimising (longest line, bad breaks)."""
    n = len(words)
    prefix = [0, *itertools.accumulate(len(w) + 1 for w in words)]

    def line_len(a: int, b: int) -> int:
        return prefix[b] - prefix[a] - 1

    def line_ok(a: int, b: int) -> bool:
        return line_len(a, b) <= width or b - a == 1

    inf = (math.inf, math.inf)
    # best[k][p]: (longest line, bad breaks) putting words[:p] on k lines
    best = [[inf] * (n + 1) for _ in range(n_lines + 1)]
    back = [[0] * (n + 1) for _ in range(n_lines + 1)]
    best[0][0] = (0, 0)
    for k in range(1, n_lines + 1):
        for p in range(1, n + 1):
            for a in range(k - 1, p):
                if best[k - 1][a] == inf or not line_ok(a, p):
                    continue
                bad = 0 if a == 0 or re.search(r"[^\w\s]$", words[a - 1]) else 1
                prev = best[k - 1][a]
                cand = (max(prev[0], line_len(a, p)), prev[1] + bad)
                if cand < best[k][p]:
                    best[k][p], back[k][p] = cand, a
    cuts, p = [n], n
    for k in range(n_lines, 0, -1):
        p = back[k][p]
        cuts.append(p)
    return cuts[::-1]


# --------------------------------------------------------------------------- writers
