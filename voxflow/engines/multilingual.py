"""Every language offline: decide the language per speech window, then transcribe each run of
windows in its own language.

Whisper decides a language once, from the first 30 s, so a long intro fools it and a recording
that switches language (German, then English) loses its second half. Here Silero VAD cuts the
chunk into speech windows of at most 30 s spread over the whole chunk; the multilingual base
model names each window's language; unsure windows take the chunk's vote; consecutive windows
in one language form a run, cut at the middle of the pause between runs, and each run is
transcribed with its language. Where the language changes, the windows either side are looked
at again in pieces of a few seconds, so the cut falls near the real switch. Whisper names a
window's language from its first seconds, so a window that switches every few sentences gets one
language, and Whisper told that language says nothing of the other's sentences: speech left
without any transcript is looked at again, and what is surely in another language is transcribed
in it. With ``local/auto``, English runs go to tiny.en, others to base.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from voxflow.engines.base import LOCAL_PREFIX, TranscribeOptions
from voxflow.models import Transcript

if TYPE_CHECKING:
    from voxflow.engines.whisper import Whisper

AUTO = "auto"  # local/auto: detect, English → tiny.en, everything else → base
BASE = "base"  # local/base: the bundled multilingual Whisper base
ENGLISH_MODEL = LOCAL_PREFIX + "tiny.en"
SAMPLE_RATE = 16_000
WINDOW_S = 30.0  # Whisper's detection looks at 30 s
SURE = 0.5  # a window less sure than this takes the chunk's vote
REFINE_S = 6.0  # where the language changes, windows are re-examined in pieces this long …
REFINE_PAUSE_MS = 100  # … cut at pauses this short
MIN_SILENCE_MS = 500
MIN_UNHEARD_S = 1.0  # speech left without a transcript this long is looked at again …
HEARD_SHARE = 0.25  # (less than this share of it inside transcribed segments)
RECOVER_SURE = 0.8  # … and transcribed again when this sure of another language


@dataclass(frozen=True, slots=True)
class Window:
    """A stretch of speech (sample indices) and its detected language."""

    start: int
    end: int
    speech_s: float
    language: str
    probabilities: dict[str, float]
    stamps: tuple[tuple[int, int], ...] = ()  # the speech inside, as (start, end) samples


@dataclass(frozen=True, slots=True)
class Run:
    """Samples [start, end) to transcribe in one language."""

    start: int
    end: int
    language: str


def is_multilingual(model: str) -> bool:
    return model.removeprefix(LOCAL_PREFIX) in (AUTO, BASE)


def transcribe_by_language(engine: Whisper, pcm: bytes, options: TranscribeOptions) -> Transcript:
    """``pcm`` transcribed run by run, each run in the language detected for it (or in the
    language asked for)."""
    from voxflow.engines.whisper import pcm_to_float

    if options.language:
        return _engine_for(engine, options.language).transcribe(pcm, options)
    samples = pcm_to_float(pcm)
    stamps = speech_stamps(samples)
    windows = detect(engine, samples, grouped(stamps, WINDOW_S))
    if not windows:  # no speech found: let Whisper have its own say on the whole chunk
        return engine.transcribe(pcm, options)
    vote = _vote(windows)
    runs = plan_runs(_refined(engine, samples, _settled(windows, vote)), len(samples))
    parts = [_transcribe_run(engine, pcm, run, options) for run in runs]
    parts += _recovered(engine, pcm, samples, _unheard(stamps, parts), runs, options)
    return _joined(parts, windows, vote)


def _unheard(stamps: list[Stamp], parts: list[Transcript]) -> list[Stamp]:
    """Speech (VAD stamps of at least MIN_UNHEARD_S) that transcribed words cover less than
    HEARD_SHARE of: what a run transcribed in the wrong language leaves out (Whisper told German
    says nothing of a sentence in English, or strides over it in one segment)."""
    spans = [(w.start_ms, w.end_ms) for part in parts for s in part.segments for w in s.words or [s]]
    unheard = []
    for start, end in stamps:
        a, b = start * 1000 // SAMPLE_RATE, end * 1000 // SAMPLE_RATE
        covered = sum(max(0, min(b, y) - max(a, x)) for x, y in spans)
        if b - a >= MIN_UNHEARD_S * 1000 and covered < HEARD_SHARE * (b - a):
            unheard.append((start, end))
    return unheard


def _recovered(
    engine: Whisper, pcm: bytes, samples: np.ndarray, unheard: list[Stamp], runs: list[Run], options: TranscribeOptions
) -> list[Transcript]:
    """Unheard speech, looked at a few seconds at a time: what is surely in another language
    than its run's is transcribed in that language; so is what is in the run's own language
    when the run turned out mixed (Whisper lost its way in it). Other unheard speech (noise,
    laughter, music) is left alone."""
    pieces = detect(engine, samples, grouped(unheard, REFINE_S))
    pieces = [p for p in pieces if p.probabilities[p.language] >= RECOVER_SURE]
    in_run = [(p, next(r for r in runs if r.start <= p.start < r.end)) for p in pieces]
    mixed = {run for piece, run in in_run if piece.language != run.language}
    chosen = [piece for piece, run in in_run if run in mixed]
    parts = [_transcribe_run(engine, pcm, Run(p.start, p.end, p.language), options) for p in chosen]
    return [part for part in parts if part.segments]


Stamp = tuple[int, int]  # speech from sample ``start`` to sample ``end``


def speech_stamps(samples: np.ndarray, longest_s: float = WINDOW_S - 1, pause_ms: int = MIN_SILENCE_MS) -> list[Stamp]:
    """Where Silero VAD hears speech, in pieces under ``longest_s`` cut at pauses of ``pause_ms``."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    vad = VadOptions(min_silence_duration_ms=pause_ms, max_speech_duration_s=longest_s)
    return [(stamp["start"], stamp["end"]) for stamp in get_speech_timestamps(samples, vad)]


def grouped(stamps: list[Stamp] | tuple[Stamp, ...], limit_s: float) -> list[tuple[Stamp, ...]]:
    """Consecutive stamps gathered into windows spanning at most ``limit_s`` (a longer stamp
    stays whole)."""
    limit = int(limit_s * SAMPLE_RATE)
    windows: list[tuple[Stamp, ...]] = []
    for stamp in stamps:
        if windows and stamp[1] - windows[-1][0][0] <= limit:
            windows[-1] = (*windows[-1], stamp)
        else:
            windows.append((stamp,))
    return windows


def detect(engine: Whisper, samples: np.ndarray, groups: list[tuple[Stamp, ...]]) -> list[Window]:
    """Each window's language, from the multilingual model."""
    whisper = engine.load()
    windows = []
    for stamps in groups:
        start, end = stamps[0][0], stamps[-1][1]
        with engine._lock:
            language, _, ranked = whisper.detect_language(audio=samples[start:end])
        speech_s = sum(b - a for a, b in stamps) / SAMPLE_RATE
        windows.append(Window(start, end, speech_s, language, dict(ranked), stamps))
    return windows


def _refined(engine: Whisper, samples: np.ndarray, windows: list[Window]) -> list[Window]:
    """Where the language changes, the two windows either side are looked at again in pieces of
    a few seconds, so a run does not swallow the first sentences of the next language. A piece
    too unsure keeps its window's language."""
    changes = {i for i in range(len(windows) - 1) if windows[i].language != windows[i + 1].language}
    border = changes | {i + 1 for i in changes}
    refined: list[Window] = []
    for i, window in enumerate(windows):
        if i not in border:
            refined.append(window)
            continue
        fine = speech_stamps(samples[window.start : window.end], REFINE_S, REFINE_PAUSE_MS)
        stamps = [(window.start + a, window.start + b) for a, b in fine]
        for piece in detect(engine, samples, grouped(stamps, REFINE_S)):
            sure = piece.probabilities[piece.language] >= SURE
            refined.append(piece if sure else replace(piece, language=window.language))
    return refined


def _vote(windows: list[Window]) -> dict[str, float]:
    """Each language's share of the chunk: window probabilities weighted by seconds of speech."""
    total = sum(w.speech_s for w in windows) or 1.0
    votes: Counter[str] = Counter()
    for w in windows:
        for code, p in w.probabilities.items():
            votes[code] += p * w.speech_s / total
    return dict(votes)


def _settled(windows: list[Window], vote: dict[str, float]) -> list[Window]:
    """Unsure windows take the chunk's winning language."""
    winner = max(vote, key=vote.__getitem__)
    return [w if w.probabilities[w.language] >= SURE else replace(w, language=winner) for w in windows]


def plan_runs(windows: list[Window], n_samples: int) -> list[Run]:
    """Consecutive windows of one language as one run; runs meet in the middle of the pause
    between them and together cover every sample."""
    runs: list[Run] = []
    for window in windows:
        if runs and runs[-1].language == window.language:
            runs[-1] = replace(runs[-1], end=window.end)
        elif runs:
            cut = (runs[-1].end + window.start) // 2
            runs[-1] = replace(runs[-1], end=cut)
            runs.append(Run(cut, window.end, window.language))
        else:
            runs.append(Run(0, window.end, window.language))
    runs[-1] = replace(runs[-1], end=n_samples)
    return runs


def _engine_for(engine: Whisper, language: str) -> Whisper:
    """tiny.en for English under local/auto; the multilingual model otherwise."""
    from voxflow.engines.whisper import Whisper

    if language == "en" and engine.model == LOCAL_PREFIX + AUTO:
        return Whisper.shared(ENGLISH_MODEL, engine.threads)
    return engine


def _transcribe_run(engine: Whisper, pcm: bytes, run: Run, options: TranscribeOptions) -> Transcript:
    piece = pcm[2 * run.start : 2 * run.end]
    part = _engine_for(engine, run.language).transcribe(piece, replace(options, language=run.language))
    return replace(part.shifted(round(run.start * 1000 / SAMPLE_RATE)), language=run.language)


def _joined(parts: list[Transcript], windows: list[Window], vote: dict[str, float]) -> Transcript:
    """One transcript for the chunk, its segments in time order: its language is the one with
    most speech."""
    seconds: Counter[str] = Counter()
    for part in parts:
        seconds[part.language] += sum(s.end_ms - s.start_ms for s in part.segments) / 1000
    if not +seconds:
        for w in windows:
            seconds[w.language] += w.speech_s
    language = (+seconds or seconds).most_common(1)[0][0]
    segments = sorted((s for p in parts for s in p.segments), key=lambda s: (s.start_ms, s.end_ms))
    return Transcript(
        text=" ".join(s.text for s in segments if s.text).strip(),
        language=language,
        segments=tuple(segments),
        language_probability=round(vote.get(language, 0.0), 4),
        languages=tuple((code, round(s, 1)) for code, s in seconds.most_common() if s > 0),
    )


def translate_by_language(engine: Whisper, pcm: bytes, language: str | None) -> Transcript:
    """``pcm`` in English: each run in another language translated by Whisper (translate task,
    told the run's language), English runs transcribed as they are."""
    from voxflow.engines.whisper import pcm_to_float

    samples = pcm_to_float(pcm)
    if language:
        runs = [Run(0, len(samples), language)]
    else:
        windows = detect(engine, samples, grouped(speech_stamps(samples), WINDOW_S))
        if not windows:
            return Transcript(text="", language="en")
        runs = plan_runs(_refined(engine, samples, _settled(windows, _vote(windows))), len(samples))
    parts = []
    for run in runs:
        piece = pcm[2 * run.start : 2 * run.end]
        if run.language == "en":
            part = _engine_for(engine, "en").transcribe(piece, TranscribeOptions(engine.model, "en"))
        else:
            part = _translated_sync(engine, piece, run.language)
        parts.append(part.shifted(round(run.start * 1000 / SAMPLE_RATE)))
    return Transcript(
        text=" ".join(p.text for p in parts if p.text).strip(),
        language="en",
        segments=tuple(s for p in parts for s in p.segments),
    )


def _translated_sync(engine: Whisper, pcm: bytes, language: str) -> Transcript:
    """Whisper's translate task (into English) on one run, decoded like a transcription."""
    import ctranslate2

    from voxflow.engines import whisper

    with engine._lock:
        model = engine.load()
        ctranslate2.set_random_seed(whisper.SAMPLING_SEED)
        raw, _ = model.transcribe(
            whisper.pcm_to_float(pcm),
            task="translate",
            language=language,
            condition_on_previous_text=False,
            temperature=whisper.FALLBACK_TEMPERATURES,
            **whisper.DECODING,
        )
        segments = tuple(s for s in (whisper._segment(r) for r in raw) if s is not None)
    return Transcript(text=" ".join(s.text for s in segments).strip(), language="en", segments=segments)
