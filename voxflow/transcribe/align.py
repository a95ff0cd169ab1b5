"""Timings for transcripts that came back as text only.

Some OpenRouter models answer with ``text`` and no segments or words. voxflow still needs
times for subtitles, so it borrows them:

* :func:`align_words` maps the API's words onto the words the embedded engine heard, with
  their times (``difflib.SequenceMatcher`` on normalised tokens). Matched words take the
  reference word's times; a run of replaced words shares the time of the reference words it
  replaced, split by characters; words with no counterpart are placed between their timed
  neighbours, split by characters.
* :func:`even_timing` is the fallback with no reference at all: the span is shared out in
  proportion to the characters of each word.

Both return one :class:`~voxflow.models.Segment` per sentence, with its words. Every word of
the input text appears exactly once, in order; times never decrease, never overlap and stay
inside ``[0, span_ms]``. Pure functions: no I/O, no engine.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Sequence

from voxflow.models import Segment, Word

_SENTENCE_END = re.compile(r"[.!?…。！？]+[\"'”’)\]]*$")
_NOT_WORD = re.compile(r"[^\w']+")


def normalise(token: str) -> str:
    """A token for matching: case-folded, accents and punctuation dropped."""
    decomposed = unicodedata.normalize("NFKD", token.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _NOT_WORD.sub("", plain.replace("’", "'")).strip("'")


def even_timing(text: str, span_ms: int) -> tuple[Segment, ...]:
    """Segments for ``text`` spread over ``[0, span_ms]`` in proportion to characters."""
    tokens = text.split()
    if not tokens:
        return ()
    span_ms = max(0, span_ms)
    return _sentences(_spread(tokens, 0, span_ms))


def align_words(text: str, reference: Sequence[Word], span_ms: int) -> tuple[Segment, ...]:
    """Segments for ``text`` timed by the ``reference`` words of another engine.

    ``reference`` are words with times relative to the same audio (e.g. the embedded
    engine's transcript of the chunk); ``span_ms`` is the audio's length. Without reference
    words this is :func:`even_timing`.
    """
    tokens = text.split()
    if not tokens:
        return ()
    span_ms = max(0, span_ms)
    ref = _clean_reference(reference, span_ms)
    if not ref:
        return even_timing(text, span_ms)

    timed: list[Word | None] = [None] * len(tokens)
    matcher = difflib.SequenceMatcher(
        None, [normalise(t) for t in tokens], [normalise(w.word) for w in ref], autojunk=False
    )
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for k in range(i2 - i1):
                r = ref[j1 + k]
                timed[i1 + k] = Word(r.start_ms, r.end_ms, tokens[i1 + k], r.confidence, r.speaker)
        elif op == "replace":
            speaker = ref[j1].speaker
            spread = _spread(tokens[i1:i2], ref[j1].start_ms, ref[j2 - 1].end_ms)
            for k, w in enumerate(spread):
                timed[i1 + k] = Word(w.start_ms, w.end_ms, w.word, None, speaker)
        # "delete" (text words the reference lacks) are filled below; "insert" (reference
        # words the text lacks) are ignored.

    words: list[Word] = []
    i = 0
    while i < len(tokens):
        if timed[i] is not None:
            words.append(timed[i])  # type: ignore[arg-type]
            i += 1
            continue
        j = i
        while j < len(tokens) and timed[j] is None:
            j += 1
        start = words[-1].end_ms if words else 0
        end = timed[j].start_ms if j < len(tokens) else span_ms  # type: ignore[union-attr]
        words.extend(_spread(tokens[i:j], start, max(start, end)))
        i = j
    return _sentences(_monotonic(words, span_ms))


def _clean_reference(reference: Sequence[Word], span_ms: int) -> list[Word]:
    """Reference words in time order, clamped to the span, without empty ones."""
    out = []
    for w in sorted(reference, key=lambda w: (w.start_ms, w.end_ms)):
        if not w.word.strip():
            continue
        start = min(max(0, w.start_ms), span_ms)
        end = min(max(start, w.end_ms), span_ms)
        out.append(Word(start, end, w.word.strip(), w.confidence, w.speaker))
    return out


def _spread(tokens: Sequence[str], start_ms: int, end_ms: int) -> list[Word]:
    """``tokens`` laid over [start_ms, end_ms] by characters, a one-character gap between."""
    total = sum(len(t) for t in tokens) + len(tokens) - 1
    span = max(0, end_ms - start_ms)
    words = []
    seen = 0
    for t in tokens:
        begin = start_ms + span * seen // total
        seen += len(t)
        finish = start_ms + span * seen // total
        seen += 1
        words.append(Word(begin, finish, t))
    return words


def _monotonic(words: list[Word], span_ms: int) -> list[Word]:
    """Times clamped into [0, span_ms], never going back, never overlapping."""
    out = []
    floor = 0
    for w in words:
        start = min(max(w.start_ms, floor), span_ms)
        end = min(max(w.end_ms, start), span_ms)
        out.append(Word(start, end, w.word, w.confidence, w.speaker))
        floor = end
    return out


def _sentences(words: list[Word]) -> tuple[Segment, ...]:
    """One Segment per sentence (a word ending in . ! ? …) and per speaker turn."""
    segments: list[Segment] = []
    current: list[Word] = []

    def close() -> None:
        if current:
            speakers = {w.speaker for w in current if w.speaker}
            segments.append(
                Segment(
                    start_ms=current[0].start_ms,
                    end_ms=current[-1].end_ms,
                    text=" ".join(w.word for w in current),
                    words=tuple(current),
                    speaker=speakers.pop() if len(speakers) == 1 else None,
                )
            )
            current.clear()

    for w in words:
        if current and w.speaker and current[-1].speaker and w.speaker != current[-1].speaker:
            close()
        current.append(w)
        if _SENTENCE_END.search(w.word):
            close()
    close()
    return tuple(segments)
