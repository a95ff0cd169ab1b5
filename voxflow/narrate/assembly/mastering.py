"""Mastering to the ACX spec: each file's WAV is encoded by ffmpeg in one pass (resample to
44.1 kHz, gain, look-ahead limiter, a low room-tone floor) as CBR MP3; the *encoded* file is
measured again (MP3 raises peaks) and re-encoded with corrected gain/limit until it passes or
the attempts run out. The M4B is the file timelines back to back, mastered the same way."""

from __future__ import annotations

import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from voxflow import media
from voxflow.narrate.assembly.options import AssemblyOptions, BookMeta
from voxflow.narrate.assembly.tags import ffmetadata
from voxflow.narrate.assembly.timeline import ChapterSpan, FilePlan, TimelineStats, ms_of


@dataclass(frozen=True, slots=True)
class RuleCheck:
    rule: str
    passed: bool
    measured: str
    target: str


@dataclass(frozen=True)
class MasteringReport:
    """Pass/fail per ACX rule, measured on the encoded file."""

    file: str
    passed: bool
    rules: tuple[RuleCheck, ...]
    levels: media.Levels
    gain_db: float
    limit_db: float
    attempts: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "passed": self.passed,
            "rules": [asdict(r) for r in self.rules],
            "levels": asdict(self.levels),
            "gain_db": round(self.gain_db, 2),
            "limit_db": round(self.limit_db, 2),
            "attempts": self.attempts,
            "note": "checked against the ACX audio spec; ACX does not accept synthetic narration without permission",
        }


def master_mp3(
    wav_path: str,
    mp3_path: str,
    stats: TimelineStats,
    options: AssemblyOptions,
    *,
    name: str,
) -> MasteringReport:
    """Encode ``wav_path`` as CBR MP3 mastered to the targets; measure the MP3 itself and
    re-encode with corrected gain/limit while it misses (up to ``max_attempts``)."""
    t = options.targets
    gain = t.target_rms_db - stats.rms_db if stats.rms_db > -150 else 0.0
    limit = t.limit_db
    levels = None
    attempts = 0
    for attempts in range(1, t.max_attempts + 1):  # noqa: B007 (reported below)
        media.encode_mastered(
            wav_path,
            mp3_path,
            gain_db=gain,
            limit_db=limit,
            noise_db=t.room_tone_db,
            fmt="mp3",
            bitrate=options.bitrate,
        )
        levels = media.measure_levels(mp3_path)
        rms_ok = t.rms_min_db + t.margin_db <= levels.rms_db <= t.rms_max_db - t.margin_db
        peak_ok = levels.peak_db <= t.peak_max_db - 0.1
        if rms_ok and peak_ok:
            break
        if not rms_ok:
            gain += t.target_rms_db - levels.rms_db
        if not peak_ok:
            limit -= levels.peak_db - (t.peak_max_db - t.margin_db)
        limit = max(limit, -24.0)
    assert levels is not None
    rules = _rules(mp3_path, levels, options)
    return MasteringReport(name, all(r.passed for r in rules), tuple(rules), levels, gain, limit, attempts)


def _rules(mp3_path: str, levels: media.Levels, options: AssemblyOptions) -> list[RuleCheck]:
    from mutagen.mp3 import MP3, BitrateMode

    t, p = options.targets, options.pauses
    info = MP3(mp3_path).info
    kbps = int(options.bitrate.rstrip("k"))
    cbr = info.bitrate_mode in (BitrateMode.CBR, BitrateMode.UNKNOWN)
    minutes = info.length / 60
    return [
        RuleCheck(
            "rms",
            t.rms_min_db <= levels.rms_db <= t.rms_max_db,
            f"{levels.rms_db:.1f} dB",
            f"{t.rms_min_db:g} … {t.rms_max_db:g} dB",
        ),
        RuleCheck(
            "peak",
            levels.peak_db <= t.peak_max_db,
            f"{levels.peak_db:.1f} dB",
            f"≤ {t.peak_max_db:g} dB",
        ),
        RuleCheck(
            "noise_floor",
            levels.floor_db <= t.floor_max_db,
            f"{levels.floor_db:.1f} dB",
            f"≤ {t.floor_max_db:g} dB",
        ),
        RuleCheck("room_tone_head", 500 <= p.head_ms <= 1000, f"{p.head_ms} ms", "500–1000 ms"),
        RuleCheck("room_tone_tail", 1000 <= p.tail_ms <= 5000, f"{p.tail_ms} ms", "1000–5000 ms"),
        RuleCheck(
            "format",
            cbr
            and info.sample_rate == media.ACX_SAMPLE_RATE
            and info.channels == 1
            and abs(info.bitrate - kbps * 1000) <= 1000,
            f"{'CBR' if cbr else 'VBR'} {info.bitrate // 1000} kbps {info.sample_rate} Hz {info.channels} ch",
            f"CBR {kbps} kbps 44100 Hz mono",
        ),
        RuleCheck(
            "length",
            minutes <= options.max_file_ms / 60_000 + 0.01,
            f"{minutes:.1f} min",
            f"≤ {options.max_file_ms / 60_000:g} min",
        ),
    ]


def mp3_duration_ms(path: str) -> int:
    from mutagen.mp3 import MP3

    return round(MP3(path).info.length * 1000)


def master_m4b(
    wavs: Sequence[tuple[FilePlan, Path, TimelineStats]],
    meta: BookMeta,
    options: AssemblyOptions,
    work: Path,
) -> tuple[Path, list[ChapterSpan]]:
    """One M4B of the whole book: the file timelines back to back, mastered the same way."""
    rate = wavs[0][0].rate
    book_wav = work / "book.wav"
    spans: list[ChapterSpan] = []
    offset_frames = 0
    sumsq = 0.0
    peak = -200.0
    with wave.open(str(book_wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        for plan, wav, stats in wavs:
            with wave.open(str(wav), "rb") as src:
                while data := src.readframes(rate * 10):
                    out.writeframes(data)
            offset_ms = ms_of(offset_frames, rate)
            spans += [replace(s, start_ms=s.start_ms + offset_ms, end_ms=s.end_ms + offset_ms) for s in plan.chapters()]
            sumsq += (10 ** (stats.rms_db / 20)) ** 2 * stats.frames
            peak = max(peak, stats.peak_db)
            offset_frames += stats.frames
            wav.unlink(missing_ok=True)
    rms_db = 10 * np.log10(sumsq / max(offset_frames, 1)) if sumsq > 0 else -200.0
    t = options.targets
    gain = t.target_rms_db - rms_db if rms_db > -150 else 0.0
    meta_path = work / "chapters.ffmeta"
    meta_path.write_text(ffmetadata(meta, spans), encoding="utf-8")
    cover_path = None
    if meta.cover:
        ext = ".png" if (meta.cover_mime or "").endswith("png") else ".jpg"
        cover_path = work / f"cover{ext}"
        cover_path.write_bytes(meta.cover)
    m4b = work / "book.m4b"
    media.encode_mastered(
        str(book_wav),
        str(m4b),
        gain_db=gain,
        limit_db=t.limit_db,
        noise_db=t.room_tone_db,
        fmt="m4b",
        bitrate=options.m4b_bitrate,
        metadata_path=str(meta_path),
        cover_path=str(cover_path) if cover_path else None,
    )
    book_wav.unlink(missing_ok=True)
    return m4b, spans
