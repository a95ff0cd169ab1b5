"""Hallucination gates: segments no engine should be believed on.

Whisper-family models invent text in silence and loop on a phrase ("Thank you for watching,
see you in the next video, see you in the next video…"); whether a given clip triggers it
can depend on the last bits of the features (the BLAS kernel). These checks look only at
what came back, so they hold for every engine and every machine:

- **loop**: the text compresses like a loop (zlib ratio above Whisper's own 2.4 threshold)
  or repeats one 2–8-word phrase four or more times in a row;
- **impossible rate**: more characters per second than anyone speaks (fast speech is
  ≈ 15–20 characters/s; the limit is well above it).

A gated segment is dropped and counted, never silently kept; the engine's own fallback
(re-decoding at a higher temperature, no previous-text conditioning) runs before this.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from voxflow.models import Segment

MAX_COMPRESSION_RATIO = 2.4  # Whisper's compression_ratio_threshold
MAX_CHARS_PER_S = 50.0  # ≈ 3× the fastest human speech
MIN_LOOP_REPEATS = 4
LOOP_WORDS = range(2, 9)

GateReason = Literal["loop", "impossible-rate"]


@dataclass(frozen=True, slots=True)
class GatedSegments:
    """The segments kept, and how many each gate dropped."""

    kept: tuple[Segment, ...]
    dropped: dict[GateReason, int]
    max_chars_per_s: float  # over the kept segments

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())


def compression_ratio(text: str) -> float:
    """Bytes of ``text`` over bytes of its zlib compression (Whisper's loop measure)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def repeats_a_phrase(text: str, times: int = MIN_LOOP_REPEATS) -> bool:
    """Whether some phrase of 2–8 words occurs ``times`` or more times in a row."""
    words = re.findall(r"\w+", text.lower())
    for n in LOOP_WORDS:
        for start in range(len(words) - n * times + 1):
            phrase = words[start : start + n]
            if all(words[start + k * n : start + (k + 1) * n] == phrase for k in range(1, times)):
                return True
    return False


def chars_per_s(segment: Segment) -> float:
    """Characters of text per second of the segment's time (a 0 ms segment: infinite)."""
    chars = len(segment.text.strip())
    duration_ms = segment.end_ms - segment.start_ms
    if duration_ms <= 0:
        return float("inf") if chars else 0.0
    return chars * 1000 / duration_ms


def gate_reason(segment: Segment) -> GateReason | None:
    """Why ``segment`` cannot be believed, or None."""
    text = segment.text.strip()
    if compression_ratio(text) > MAX_COMPRESSION_RATIO or repeats_a_phrase(text):
        return "loop"
    if chars_per_s(segment) > MAX_CHARS_PER_S:
        return "impossible-rate"
    return None


def gate_segments(segments: Sequence[Segment]) -> GatedSegments:
    """Drop the segments a gate refuses; count them by reason."""
    kept, dropped = [], {}
    for seg in segments:
        reason = gate_reason(seg)
        if reason is None:
            kept.append(seg)
        else:
            dropped[reason] = dropped.get(reason, 0) + 1
    rates = [chars_per_s(s) for s in kept if s.text.strip()]
    return GatedSegments(tuple(kept), dropped, round(max(rates, default=0.0), 2))
