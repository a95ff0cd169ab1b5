"""A synthesised chunk's audio: where it lies on disk, and where the speech is in it
(leading and trailing silence trimmed, sentence boundaries placed in the pauses)."""

from __future__ import annotations

import wave
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voxflow import media
from voxflow.errors import AudioError

FRAME_MS = 10
VOICED_DB = -50.0  # a 10 ms frame louder than this (or than peak − 40 dB) is speech
GAP_MIN_MS = 80  # a silent run this long inside a chunk can be a sentence boundary
TRIM_GUARD_IN_MS = 20
TRIM_GUARD_OUT_MS = 60


@dataclass(frozen=True, slots=True)
class ChunkAudio:
    """A synthesised chunk on local disk: a mono s16le WAV in the chunk cache."""

    path: str
    sample_rate: int
    frames: int

    @property
    def duration_ms(self) -> int:
        return self.frames * 1000 // self.sample_rate


@dataclass(frozen=True, slots=True)
class ChunkShape:
    """Where the speech is in a chunk: trimmed span and sentence boundaries (frames)."""

    start: int  # first frame kept (leading silence trimmed)
    end: int  # one past the last frame kept
    boundaries: tuple[int, ...]  # sentence boundaries, relative to ``start``

    @property
    def frames(self) -> int:
        return self.end - self.start


def load_samples(audio: ChunkAudio, rate: int) -> np.ndarray:
    """The chunk's samples (int16) at ``rate`` (resampled by ffmpeg when it differs)."""
    try:
        with wave.open(audio.path, "rb") as wav:
            channels, width, src_rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            pcm = wav.readframes(wav.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        raise AudioError(f"cannot read synthesised chunk {audio.path}: {exc}") from exc
    if width != 2:
        raise AudioError(f"synthesised chunk {audio.path} is not 16-bit PCM")
    if src_rate != rate or channels != 1:
        pcm = media.resample_pcm(pcm, src_rate, rate, channels)
    return np.frombuffer(pcm, dtype=np.int16)


def analyse_chunk(samples: np.ndarray, rate: int, weights: Sequence[int]) -> ChunkShape:
    """Trim leading/trailing silence and place the sentence boundaries.

    Each boundary is expected where its share of the spoken characters says; it snaps to
    the middle of the nearest silent run (≥ 80 ms) within a window around that estimate.
    """
    frame = max(1, rate * FRAME_MS // 1000)
    n = len(samples) // frame
    if n == 0:
        return ChunkShape(0, 0, ())
    x = samples[: n * frame].astype(np.float32).reshape(n, frame) / 32768.0
    db = 10 * np.log10((x * x).mean(axis=1) + 1e-12)
    threshold = max(VOICED_DB, float(db.max()) - 40.0)
    voiced = np.flatnonzero(db > threshold)
    if voiced.size == 0:
        return ChunkShape(0, 0, ())
    first, last = int(voiced[0]), int(voiced[-1])
    start = max(0, first * frame - rate * TRIM_GUARD_IN_MS // 1000)
    end = min(len(samples), (last + 1) * frame + rate * TRIM_GUARD_OUT_MS // 1000)
    gaps = _silent_runs(db[first : last + 1] <= threshold - 10, first, frame)
    return ChunkShape(start, end, _place_boundaries(gaps, start, end, weights, rate))


def _silent_runs(quiet: np.ndarray, first: int, frame: int) -> list[tuple[int, int]]:
    """(start, end) samples of each run of quiet frames of at least GAP_MIN_MS; ``quiet``
    flags the frames from frame ``first`` on (a run still open at the end does not count)."""
    gaps: list[tuple[int, int]] = []
    run = None
    min_run = max(1, GAP_MIN_MS // FRAME_MS)
    for i in range(first, first + len(quiet)):
        if quiet[i - first] and run is None:
            run = i
        elif not quiet[i - first] and run is not None:
            if i - run >= min_run:
                gaps.append((run * frame, i * frame))
            run = None
    return gaps


def _place_boundaries(
    gaps: list[tuple[int, int]], start: int, end: int, weights: Sequence[int], rate: int
) -> tuple[int, ...]:
    """Each sentence boundary (relative to ``start``) at the middle of the silent run nearest
    to where its share of the characters puts it (within a window), else at that estimate."""
    boundaries: list[int] = []
    total = sum(weights) or 1
    span = end - start
    done = 0
    previous = 0
    window = max(rate, span // 5)
    for w in weights[:-1]:
        done += w
        expected = span * done // total
        best = None
        for g0, g1 in gaps:
            mid = (g0 + g1) // 2 - start
            if mid <= previous or abs(mid - expected) > window:
                continue
            if best is None or abs(mid - expected) < abs(best - expected):
                best = mid
        point = best if best is not None else max(previous + 1, min(expected, span - 1))
        boundaries.append(point)
        previous = point
    return tuple(boundaries)
