"""Probing and decoding short recordings in process with libav (PyAV), no ffmpeg spawn.

Spawning ffprobe and ffmpeg costs ≈ 60 ms of CPU and ≈ 140 ms of wall per recording, more
than decoding a short file takes. These functions only ever answer for the clean case and
return ``None`` for anything else (unreadable, damaged, truncated, longer than expected):
``voxflow.media`` then runs the ffmpeg tools, whose verdicts and messages are the reference.

Pauses follow ffmpeg's ``silencedetect`` on s16 mono exactly: a sample is quiet when
``-noise < x < noise`` with ``noise = trunc(10^(dB/20) × 32767)``, and a pause is a run of at
least ``round(min_silence_s × rate)`` quiet samples. The peak follows ``volumedetect``.
"""

from __future__ import annotations

import errno
import math
import wave
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from voxflow.errors import DiskFull
from voxflow.models import MediaInfo, Span

if TYPE_CHECKING:
    import numpy as np
    from av.audio.stream import AudioStream
    from av.container import InputContainer

SAMPLE_RATE = 16_000
MAX_IN_PROCESS_MS = 60_000  # longer recordings stream through one ffmpeg process
_SPARE_MS = 200  # a decode this much shorter than the container says is ffmpeg's to judge
_SILENT_PEAK_DB = -91.0  # what volumedetect prints for digital silence


def probe(path: str, audio_language: str | None = None) -> MediaInfo | None:
    """What ffprobe would say about ``path`` (duration, codec, streams) for the audio stream
    to transcribe, or None if libav cannot open it or it has no audio stream (ffprobe then
    names the problem)."""
    import av

    from voxflow.media import choose_audio_stream

    try:
        with av.open(path) as container:
            audio = list(container.streams.audio)
            if not audio:
                return None
            tagged = [(s.metadata.get("language"), bool(s.disposition & av.stream.Disposition.default)) for s in audio]
            index, note = choose_audio_stream(tagged, audio_language)
            info = _media_info(container, audio[index])
            return replace(info, audio_stream=index, audio_language=tagged[index][0], stream_note=note)
    except (av.FFmpegError, ValueError, OSError, UnicodeDecodeError):
        return None


def _media_info(container: InputContainer, stream: AudioStream) -> MediaInfo:
    """ffprobe's reading: the container's duration, else the stream's; cover art is no video."""
    import av

    context = stream.codec_context
    duration = container.duration / av.time_base if container.duration else None
    if not duration and stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    pictures = av.stream.Disposition.attached_pic
    videos = [s for s in container.streams.video if not s.disposition & pictures]
    return MediaInfo(
        duration_ms=round((duration or 0.0) * 1000),
        format_name=container.format.name,
        audio_codec=context.codec.canonical_name if context.codec else None,
        sample_rate=context.sample_rate or None,
        channels=context.layout.nb_channels or None,
        has_video=bool(videos),
    )


@dataclass(frozen=True, slots=True)
class Decoded:
    """16 kHz mono s16 samples of a whole (short) recording."""

    samples: np.ndarray

    @property
    def duration_ms(self) -> int:
        return len(self.samples) * 1000 // SAMPLE_RATE


def decode_short(src: str, expected_ms: int, stream: int = 0) -> Decoded | None:
    """Audio stream ``stream`` of ``src`` as 16 kHz mono s16, when it is at most
    ``MAX_IN_PROCESS_MS`` long and decodes cleanly to about ``expected_ms``; else None."""
    if not 0 < expected_ms <= MAX_IN_PROCESS_MS:
        return None
    import av
    import numpy as np

    cap = (expected_ms + 1000) * SAMPLE_RATE // 1000
    pieces: list[np.ndarray] = []
    total = 0
    try:
        with av.open(src) as container:
            if len(container.streams.audio) <= stream:
                return None
            resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(container.streams.audio[stream]):
                for piece in resampler.resample(frame):
                    pieces.append(piece.to_ndarray()[0])
                    total += piece.samples
                if total > cap:
                    return None  # longer than the container says: ffmpeg streams it
            pieces += [piece.to_ndarray()[0] for piece in resampler.resample(None)]
    except (av.FFmpegError, ValueError, OSError, UnicodeDecodeError):
        return None
    decoded = Decoded(np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16))
    if decoded.duration_ms == 0 or decoded.duration_ms < expected_ms - _SPARE_MS:
        return None
    return decoded


def write_wav(decoded: Decoded, wav_path: str) -> None:
    """Write the samples as a 16 kHz mono s16le WAV; DiskFull (file removed) when out of space."""
    try:
        with wave.open(wav_path, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE)
            wav.writeframes(decoded.samples.astype("<i2").tobytes())
    except OSError as exc:
        Path(wav_path).unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise DiskFull(wav_path) from exc
        raise


def silences(decoded: Decoded, silence_db: float, min_silence_s: float) -> list[Span]:
    """Pauses as ffmpeg's ``silencedetect=noise={silence_db}dB:duration={min_silence_s}``
    reports them on 16 kHz s16 mono; an open pause ends at the end of the recording."""
    import numpy as np

    noise = math.trunc(10 ** (silence_db / 20) * 32767)
    samples = decoded.samples
    quiet = (samples > -noise) & (samples < noise)
    edges = np.diff(np.concatenate(([0], quiet.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    shortest = round(min_silence_s * SAMPLE_RATE)
    duration_ms = decoded.duration_ms
    return [
        Span(_ms(start), min(_ms(end), duration_ms))
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True)
        if end - start >= shortest and _ms(start) < duration_ms
    ]


def peak_db(decoded: Decoded) -> float:
    """The loudest sample in dBFS to 0.1 dB, as volumedetect's ``max_volume`` prints it."""
    import numpy as np

    samples = decoded.samples
    if len(samples) == 0:
        return _SILENT_PEAK_DB
    loudest = int(np.abs(samples.astype(np.int32)).max())
    return round(20 * math.log10(loudest / 32768), 1) if loudest else _SILENT_PEAK_DB


def _ms(sample: int) -> int:
    return round(sample * 1000 / SAMPLE_RATE)
