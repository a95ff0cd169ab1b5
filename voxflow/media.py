"""The only module that runs ffmpeg and ffprobe.

Long recordings are never decoded into memory as a whole: one streaming ffmpeg pass writes
16 kHz mono PCM to a WAV file on local disk while ``silencedetect`` reports the pauses; chunks
are then read from that file one at a time and encoded for the engine.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import wave
from collections.abc import Callable, Sequence
from pathlib import Path

from voxflow import libav
from voxflow.errors import AudioError, ConfigError, DiskFull
from voxflow.models import MediaInfo, PreparedAudio, Span

SAMPLE_RATE = 16_000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000  # s16le mono
MEDIA_EXTENSIONS = frozenset(
    [
        "wav",
        "wave",
        "flac",
        "mp3",
        "m4a",
        "m4b",
        "aac",
        "ogg",
        "oga",
        "opus",
        "webm",
        "mp4",
        "m4v",
        "mkv",
        "mka",
        "mov",
        "avi",
        "wma",
        "aif",
        "aiff",
        "aifc",
        "amr",
        "3gp",
        "3g2",
        "ts",
        "mts",
        "m2ts",
        "mpg",
        "mpeg",
        "wmv",
        "flv",
        "caf",
        "ac3",
        "eac3",
        "dts",
        "mp2",
        "spx",
        "wv",
        "ape",
    ]
)
# Headers of media containers, for files whose extension says nothing.
_MAGIC = (b"RIFF", b"fLaC", b"ID3", b"OggS", b"\x1a\x45\xdf\xa3", b"FORM", b"#!AMR", b"MThd")
_ERROR_LINE = re.compile(r"^\[(?!silencedetect|Parsed_volumedetect)[^\]]+\] (.*)$")
_SILENCE = re.compile(r"silence_(start|end): (-?[\d.]+)")
_MAX_VOLUME = re.compile(r"max_volume: (-?[\d.]+|-inf) dB")
SILENT_PEAK_DB = -50.0  # a recording whose loudest sample is below this has no speech
QUIET_FRAME_MS = 50


def tool(name: str) -> str:
    """Path of ``ffmpeg`` or ``ffprobe`` (``VOXFLOW_FFMPEG_DIR`` wins over PATH)."""
    folder = os.environ.get("VOXFLOW_FFMPEG_DIR")
    found = shutil.which(name, path=folder) if folder else shutil.which(name)
    if not found:
        raise ConfigError(f"{name} not found: install ffmpeg (make setup) or set VOXFLOW_FFMPEG_DIR")
    return found


def tool_version(name: str) -> str:
    out = subprocess.run([tool(name), "-version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def looks_like_media(name: str, header: bytes) -> bool:
    """True for a known media extension, or an unknown one whose first bytes are a container."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext in MEDIA_EXTENSIONS:
        return True
    if header.startswith(_MAGIC) or header[4:8] == b"ftyp":
        return True
    return len(header) > 1 and header[0] == 0xFF and (header[1] & 0xE0) == 0xE0  # MPEG audio


def _ffprobe_json(path: str) -> dict:
    cmd = [
        tool("ffprobe"),
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        path,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    if proc.returncode != 0:
        reason = _last_line(proc.stderr) or "ffprobe could not read it"
        raise AudioError(f"not a readable audio or video file ({reason})")
    return json.loads(proc.stdout or "{}")


AUDIO_ONLY_EXTENSIONS = frozenset({"wav", "flac", "mp3", "ogg", "opus", "aac", "wma", "aiff", "aif"})


def subtitle_languages(path: str) -> list[str | None]:
    """The language tag of each subtitle stream in a local media file, in stream order (ffprobe);
    [] for audio-only formats or a file ffprobe cannot read."""
    if path.rsplit(".", 1)[-1].lower() in AUDIO_ONLY_EXTENSIONS:
        return []
    cmd = [tool("ffprobe"), "-v", "error", "-select_streams", "s", "-show_entries", "stream_tags=language"]
    try:
        proc = subprocess.run([*cmd, "-of", "json", path], capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return []
    if proc.returncode != 0:
        return []
    return [(s.get("tags") or {}).get("language") for s in json.loads(proc.stdout or "{}").get("streams", [])]


def choose_audio_stream(streams: list[tuple[str | None, bool]], language: str | None) -> tuple[int, str]:
    """Which audio stream to transcribe, from each stream's (language tag, default flag): the
    first tagged ``language`` (ISO-639-1; files tag ``eng``, ``ger``, ``en`` …), else the one
    marked default, else the first. → (its index, a note when ``language`` was asked and absent)."""

    def speaks(tag: str | None) -> bool:
        import langcodes  # ≈ 0.3 s the first time: only when a language is asked for

        try:
            return bool(tag) and langcodes.Language.get(tag or "").language == language
        except (LookupError, ValueError):
            return False

    asked = next((i for i, (tag, _default) in enumerate(streams) if speaks(tag)), None) if language else None
    if asked is not None:
        return asked, ""
    chosen = next((i for i, (_tag, default) in enumerate(streams) if default), 0)
    if not language:
        return chosen, ""
    tags = ", ".join(f"{i}: {tag or 'untagged'}" for i, (tag, _default) in enumerate(streams))
    return chosen, f"no {language} audio track ({tags}): transcribed track {chosen}"


def probe(path: str, audio_language: str | None = None) -> MediaInfo:
    """Duration and streams of a media file, for the audio stream to transcribe (see
    :func:`choose_audio_stream`); AudioError if it has no usable audio.

    In process with libav when it reads the file; else ffprobe, which names the problem."""
    if os.path.getsize(path) == 0:
        raise AudioError("the file is empty (0 bytes)")
    return libav.probe(path, audio_language) or probe_with_ffprobe(path, audio_language)


def probe_with_ffprobe(path: str, audio_language: str | None = None) -> MediaInfo:
    """``probe`` by running ffprobe."""
    data = _ffprobe_json(path)
    streams = data.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    video = [s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")]
    if not audio:
        what = "video file has no audio stream" if video else "no audio stream found"
        raise AudioError(f"{what}: nothing to transcribe")
    tagged = [((s.get("tags") or {}).get("language"), bool(s.get("disposition", {}).get("default"))) for s in audio]
    index, note = choose_audio_stream(tagged, audio_language)
    first = audio[index]
    duration = _float(data.get("format", {}).get("duration")) or _float(first.get("duration"))
    return MediaInfo(
        duration_ms=round((duration or 0.0) * 1000),
        format_name=data.get("format", {}).get("format_name", ""),
        audio_codec=first.get("codec_name"),
        sample_rate=int(first["sample_rate"]) if first.get("sample_rate") else None,
        channels=first.get("channels"),
        has_video=bool(video),
        audio_stream=index,
        audio_language=tagged[index][0],
        stream_note=note,
    )


def prepare_audio(
    src: str,
    wav_path: str,
    *,
    silence_db: float = -30.0,
    min_silence_s: float = 0.35,
    expected_ms: int = 0,
    stream: int = 0,
) -> PreparedAudio:
    """Decode audio stream ``stream`` (0: the first) of ``src`` into 16 kHz mono WAV and find its pauses.

    A short recording (≤ ``libav.MAX_IN_PROCESS_MS``, as probed) that decodes cleanly is done
    in process; anything else in one streaming ffmpeg pass, constant memory. A file that
    decodes only partly (a truncated MP3) is kept as far as it decodes and flagged ``truncated``.
    """
    decoded = libav.decode_short(src, expected_ms, stream)
    if decoded is None:
        return prepare_audio_with_ffmpeg(
            src, wav_path, silence_db=silence_db, min_silence_s=min_silence_s, expected_ms=expected_ms, stream=stream
        )
    libav.write_wav(decoded, wav_path)
    return PreparedAudio(
        wav_path=wav_path,
        duration_ms=decoded.duration_ms,
        silences=tuple(libav.silences(decoded, silence_db, min_silence_s)),
        peak_db=libav.peak_db(decoded),
    )


def prepare_audio_with_ffmpeg(
    src: str,
    wav_path: str,
    *,
    silence_db: float = -30.0,
    min_silence_s: float = 0.35,
    expected_ms: int = 0,
    stream: int = 0,
) -> PreparedAudio:
    """``prepare_audio`` in one streaming ffmpeg pass (silencedetect, volumedetect)."""
    filters = (
        f"aresample={SAMPLE_RATE},aformat=sample_fmts=s16:channel_layouts=mono,"
        f"silencedetect=noise={silence_db}dB:duration={min_silence_s},volumedetect"
    )
    cmd = [
        tool("ffmpeg"),
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "info",
        "-y",
        "-i",
        src,
        "-map",
        f"0:a:{stream}",
        "-vn",
        "-af",
        filters,
        "-c:a",
        "pcm_s16le",
        "-f",
        "wav",
        wav_path,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    duration_ms = wav_duration_ms(wav_path) if os.path.exists(wav_path) else 0
    errors = _decode_errors(proc.stderr)
    if proc.returncode != 0 or duration_ms == 0:
        Path(wav_path).unlink(missing_ok=True)
        if "No space left on device" in proc.stderr:
            raise DiskFull(wav_path)
        reason = errors[-1] if errors else _last_line(proc.stderr) or "no audio decoded"
        raise AudioError(f"cannot decode the audio ({reason})")
    short = expected_ms > 0 and duration_ms < expected_ms - max(500, expected_ms // 50)
    truncated = short or (bool(errors) and expected_ms > 0 and duration_ms < expected_ms - 200)
    warning = ""
    if truncated:
        detail = errors[-1] if errors else f"decoded {duration_ms / 1000:.1f} s of "
        detail += "" if errors else f"{expected_ms / 1000:.1f} s"
        warning = f"truncated or damaged: transcribed as far as it decodes ({detail})"
    peak = _MAX_VOLUME.search(proc.stderr)
    return PreparedAudio(
        wav_path=wav_path,
        duration_ms=duration_ms,
        silences=tuple(parse_silences(proc.stderr, duration_ms)),
        truncated=truncated,
        decode_warning=warning,
        peak_db=float(peak.group(1)) if peak else -91.0,
    )


def parse_silences(log: str, duration_ms: int) -> list[Span]:
    """Silence intervals from silencedetect's log (an open one ends at ``duration_ms``)."""
    spans: list[Span] = []
    start: int | None = None
    for kind, value in _SILENCE.findall(log):
        ms = max(0, round(float(value) * 1000))
        if kind == "start":
            start = ms
        elif start is not None:
            spans.append(Span(start, min(ms, duration_ms)))
            start = None
    if start is not None and start < duration_ms:
        spans.append(Span(start, duration_ms))
    return spans


def silent_fraction(duration_ms: int, silences: Sequence[Span]) -> float:
    if duration_ms <= 0:
        return 1.0
    return min(1.0, sum(s.duration_ms for s in silences) / duration_ms)


def plan_chunks(
    duration_ms: int,
    silences: Sequence[Span],
    max_chunk_ms: int,
    *,
    search_ms: int | None = None,
    quietest: Callable[[Span], int] | None = None,
) -> list[Span]:
    """Cut [0, duration) into chunks ≤ ``max_chunk_ms``, each cut in the middle of a pause.

    Within the last ``search_ms`` before the limit the longest pause wins; with no pause
    there, ``quietest(window)`` picks the cut (else the limit). Chunks tile the recording.
    """
    if duration_ms <= 0:
        return []
    search_ms = search_ms if search_ms is not None else max(1000, max_chunk_ms // 3)
    chunks: list[Span] = []
    start = 0
    while duration_ms - start > max_chunk_ms:
        limit = start + max_chunk_ms
        window = [s for s in silences if s.end_ms > limit - search_ms and s.start_ms < limit]
        cut = quietest(Span(limit - search_ms, limit)) if quietest else limit
        if window:
            best = max(window, key=lambda s: min(s.end_ms, limit) - max(s.start_ms, start))
            cut = (max(best.start_ms, start + 1) + min(best.end_ms, limit)) // 2
        chunks.append(Span(start, cut))
        start = cut
    chunks.append(Span(start, duration_ms))
    return chunks


def wav_duration_ms(wav_path: str) -> int:
    with wave.open(wav_path, "rb") as wav:
        return wav.getnframes() * 1000 // wav.getframerate()


def quietest_point(wav_path: str, window: Span) -> int:
    """The middle of the quietest 50 ms frame in ``window`` of a prepared WAV (noise-robust)."""
    import numpy as np

    samples = np.frombuffer(read_pcm(wav_path, window), dtype=np.int16).astype(np.float32)
    frame = SAMPLE_RATE * QUIET_FRAME_MS // 1000
    n = len(samples) // frame
    if n == 0:
        return window.end_ms
    energy = (samples[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    smooth = np.convolve(energy, np.ones(5) / 5, mode="same") if n >= 5 else energy
    return window.start_ms + int(np.argmin(smooth)) * QUIET_FRAME_MS + QUIET_FRAME_MS // 2


def read_pcm(wav_path: str, span: Span) -> bytes:
    """The s16le samples of ``span`` from a prepared WAV (reads only that span)."""
    with wave.open(wav_path, "rb") as wav:
        rate = wav.getframerate()
        first = span.start_ms * rate // 1000
        wav.setpos(min(first, wav.getnframes()))
        return wav.readframes(span.end_ms * rate // 1000 - first)


def encode_pcm(pcm: bytes, fmt: str, *, sample_rate: int = SAMPLE_RATE, bitrate: str = "32k") -> bytes:
    """Encode mono s16le PCM as flac, mp3, ogg (opus) or wav, in process with libav (PyAV):
    ≈ 3 ms for a 5 s chunk where spawning ffmpeg costs ≈ 90 ms."""
    if fmt == "pcm":
        return pcm
    container_format, codec, rate = _ENCODINGS.get(fmt, (None, None, 0))
    if codec is None:
        raise AudioError(f"cannot encode to {fmt!r}")
    import av
    import numpy as np

    samples = np.frombuffer(pcm, dtype=np.int16).reshape(1, -1)
    buffer = io.BytesIO()
    try:
        with av.open(buffer, "w", format=container_format) as out:
            stream = out.add_stream(codec, rate=rate or sample_rate, layout="mono")
            if codec != "flac" and codec != "pcm_s16le":
                stream.bit_rate = int(bitrate.rstrip("k")) * 1000
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = sample_rate
            for packet in stream.encode(frame):
                out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    except (av.FFmpegError, ValueError) as exc:
        raise AudioError(f"cannot encode {fmt}: {exc}") from exc
    return buffer.getvalue()


_ENCODINGS = {  # fmt → (container, codec, forced sample rate or 0)
    "flac": ("flac", "flac", 0),
    "mp3": ("mp3", "libmp3lame", 0),
    "ogg": ("ogg", "libopus", 48_000),
    "wav": ("wav", "pcm_s16le", 0),
}


def decode_to_pcm(data: bytes, fmt: str = "", *, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Encoded audio bytes (mp3, flac, m4a, ogg, wav …) → mono s16le PCM at ``sample_rate``,
    in process with libav (PyAV): the first audio stream, resampled and downmixed."""
    if fmt == "pcm":
        return data
    import av

    out = bytearray()
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.audio:
                raise AudioError("cannot decode the audio (no audio stream)")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            for frame in container.decode(container.streams.audio[0]):
                for piece in resampler.resample(frame):
                    out += piece.to_ndarray().tobytes()
            for piece in resampler.resample(None):
                out += piece.to_ndarray().tobytes()
    except av.FFmpegError as exc:
        raise AudioError(f"cannot decode the audio ({exc})") from exc
    if not out:
        raise AudioError("cannot decode the audio (empty)")
    return bytes(out)


def _decode_errors(log: str) -> list[str]:
    """Decoder complaints from an ffmpeg log (silencedetect lines excluded)."""
    lines = [m.group(1).strip() for m in map(_ERROR_LINE.match, log.splitlines()) if m]
    noisy = ("Input stream", "Output stream", "Stream mapping", "Estimating duration")
    keys = ("error", "invalid", "corrupt", "truncat", "incomplete", "failed", "damaged")
    return [ln for ln in lines if not ln.startswith(noisy) and any(k in ln.lower() for k in keys)]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


# --- narration: assembly and mastering --------------------------------------------------
# Used by voxflow.narrate.assembly: measure levels with astats + ebur128, resample, master and
# encode MP3 (CBR) or M4B (AAC, chapters, cover) in one streaming ffmpeg pass each.

from dataclasses import dataclass as _dataclass  # noqa: E402

ACX_SAMPLE_RATE = 44_100
_ASTATS_LINE = re.compile(r"\[Parsed_astats_\d+ @ [^\]]+\] (RMS level dB|Peak level dB|"
                          r"RMS trough dB): (\S+)")  # fmt: skip
_EBUR_I = re.compile(r"^\s*I:\s+(-?[\d.]+|-inf) LUFS", re.M)
_EBUR_PEAK = re.compile(r"True peak:\s*\n\s*Peak:\s+(-?[\d.]+|-inf) dBFS")


@_dataclass(frozen=True, slots=True)
class Levels:
    """Loudness of a file as ffmpeg measures it (dBFS; ACX's RMS and peak conventions)."""

    rms_db: float  # RMS over the whole file (astats "RMS level dB")
    peak_db: float  # highest sample (astats "Peak level dB")
    floor_db: float  # RMS of the quietest window (astats "RMS trough dB"): the noise floor
    lufs: float | None = None  # EBU R128 integrated loudness
    true_peak_db: float | None = None  # EBU R128 true peak (oversampled)


def _db(value: str) -> float:
    return -200.0 if value in ("-inf", "nan", "inf") else float(value)


def measure_levels(path: str, *, window_s: float = 0.5) -> Levels:
    """RMS, peak, noise floor (quietest ``window_s`` window) and R128 loudness of a file,
    decoded by ffmpeg in one streaming pass."""
    filters = (f"astats=metadata=0:reset=0:length={window_s}:measure_perchannel=none,"
               "ebur128=peak=true")  # fmt: skip
    cmd = [tool("ffmpeg"), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info",
           "-i", path, "-map", "0:a:0", "-af", filters, "-f", "null", "-"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AudioError(f"cannot measure loudness of {path}: {_last_line(proc.stderr)}")
    found = {key: _db(value) for key, value in _ASTATS_LINE.findall(proc.stderr)}
    if "RMS level dB" not in found:
        raise AudioError(f"cannot measure loudness of {path}: no astats summary")
    lufs = _EBUR_I.findall(proc.stderr)
    peak = _EBUR_PEAK.findall(proc.stderr)
    return Levels(
        rms_db=found["RMS level dB"],
        peak_db=found.get("Peak level dB", -200.0),
        floor_db=found.get("RMS trough dB", -200.0),
        lufs=_db(lufs[-1]) if lufs else None,
        true_peak_db=_db(peak[-1]) if peak else None,
    )


_SOXR: list[bool] = []


def _resampler() -> str:
    """soxr (high quality) when this ffmpeg has it, else swresample's default."""
    if not _SOXR:
        out = subprocess.run([tool("ffmpeg"), "-hide_banner", "-buildconf"],
                             capture_output=True, text=True, check=False)  # fmt: skip
        _SOXR.append("--enable-libsoxr" in out.stdout)
    return ":resampler=soxr:precision=28" if _SOXR[0] else ":filter_size=64"


def mastering_graph(gain_db: float, limit_db: float, noise_db: float | None, sample_rate: int = ACX_SAMPLE_RATE) -> str:
    """The filter graph (input ``[0:a]``, output ``[out]``): resample → gain → look-ahead
    limiter (delay compensated) → room tone (white noise at ``noise_db`` RMS) mixed in."""
    limit = min(1.0, max(0.0625, 10 ** (limit_db / 20)))
    chain = (f"[0:a]aresample={sample_rate}{_resampler()},volume={gain_db:.3f}dB,"
             f"alimiter=limit={limit:.5f}:level=disabled:latency=1:attack=5:release=80,"
             "aformat=channel_layouts=mono")  # fmt: skip
    if noise_db is None:
        return chain + "[out]"
    amplitude = 10 ** (noise_db / 20) * 3**0.5  # uniform white noise: RMS = amplitude / √3
    return (f"{chain}[speech];anoisesrc=r={sample_rate}:a={amplitude:.7f}:c=white:seed=7,"
            "aformat=channel_layouts=mono[tone];[speech][tone]"
            "amix=inputs=2:duration=first:dropout_transition=0:normalize=0[out]")  # fmt: skip


def encode_mastered(
    wav_path: str,
    out_path: str,
    *,
    gain_db: float,
    limit_db: float,
    noise_db: float | None,
    fmt: str = "mp3",
    bitrate: str = "192k",
    sample_rate: int = ACX_SAMPLE_RATE,
    metadata_path: str | None = None,
    cover_path: str | None = None,
) -> None:
    """Master ``wav_path`` and encode it: ``mp3`` = CBR MP3, mono, no tags (the caller tags
    it); ``m4b`` = AAC in an MP4 audiobook container with the chapters and tags of an
    ffmetadata file and the cover as attached picture. One streaming pass."""
    cmd = [tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-i", wav_path]  # fmt: skip
    if metadata_path:
        cmd += ["-f", "ffmetadata", "-i", metadata_path]
    if cover_path and fmt == "m4b":
        cmd += ["-i", cover_path]
    cmd += ["-filter_complex", mastering_graph(gain_db, limit_db, noise_db, sample_rate),
            "-map", "[out]", "-ac", "1", "-ar", str(sample_rate)]  # fmt: skip
    if fmt == "mp3":
        cmd += ["-c:a", "libmp3lame", "-b:a", bitrate, "-abr", "0", "-map_metadata", "-1",
                "-id3v2_version", "0", "-write_xing", "1", "-f", "mp3", out_path]  # fmt: skip
    elif fmt == "m4b":
        if metadata_path:
            cmd += ["-map_metadata", "1", "-map_chapters", "1"]
        if cover_path:
            cover_input = "2" if metadata_path else "1"
            cmd += ["-map", f"{cover_input}:v", "-c:v", "copy", "-disposition:v:0", "attached_pic"]
        cmd += ["-c:a", "aac", "-b:a", bitrate, "-movflags", "+faststart", "-f", "mp4", out_path]
    else:
        raise AudioError(f"cannot encode an audiobook as {fmt!r}")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        Path(out_path).unlink(missing_ok=True)
        raise AudioError(f"ffmpeg could not encode the {fmt}: {_last_line(proc.stderr)}")


def resample_pcm(pcm: bytes, from_rate: int, to_rate: int, channels: int = 1) -> bytes:
    """s16le PCM at ``from_rate`` (any channel count) → mono s16le at ``to_rate``."""
    if from_rate == to_rate and channels == 1:
        return pcm
    cmd = [tool("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "s16le",
           "-ar", str(from_rate), "-ac", str(channels), "-i", "pipe:0", "-af",
           f"aresample={to_rate}{_resampler()}", "-ac", "1", "-f", "s16le", "pipe:1"]  # fmt: skip
    proc = subprocess.run(cmd, input=pcm, capture_output=True, check=False)
    if proc.returncode != 0:
        raise AudioError(f"ffmpeg could not resample: {_last_line(proc.stderr.decode())}")
    return proc.stdout
