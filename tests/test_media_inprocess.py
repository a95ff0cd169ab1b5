"""Short recordings are probed and decoded in process (PyAV) and agree with the ffmpeg tools.

The oracle is the ffmpeg CLI itself, run here with the filter chain the streaming path uses:
``aresample=16000,aformat=s16:mono,silencedetect,volumedetect`` into a WAV.
"""

from __future__ import annotations

import re
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from voxflow import media
from voxflow.errors import AudioError
from voxflow.models import PreparedAudio

SILENCE_DB, MIN_SILENCE_S = -30.0, 0.35
CLIPS = ["beckett.wav", "jfk.flac", "jfk.mp3", "jfk video.mp4", "spk1_snt1.wav", "spk1_snt3.wav"]


def ffmpeg_reference(src: Path, wav: Path) -> tuple[np.ndarray, list[tuple[float, float]], float]:
    """Samples, pauses (s) and max_volume (dB) as the ffmpeg CLI computes them."""
    chain = (f"aresample=16000,aformat=sample_fmts=s16:channel_layouts=mono,"
             f"silencedetect=noise={SILENCE_DB}dB:duration={MIN_SILENCE_S},volumedetect")  # fmt: skip
    log = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-y", "-i", str(src), "-map", "0:a:0", "-af", chain, str(wav)],
        capture_output=True, text=True, check=True,
    ).stderr  # fmt: skip
    starts = [float(v) for v in re.findall(r"silence_start: (\S+)", log)]
    ends = [float(v) for v in re.findall(r"silence_end: (\S+)", log)]
    samples = read_wav(wav)
    ends += [len(samples) / 16000] * (len(starts) - len(ends))  # a pause open at the end
    peak = float(re.findall(r"max_volume: (\S+) dB", log)[-1])
    return samples, list(zip(starts, ends, strict=True)), peak


def read_wav(path: Path | str) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.float64)


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(((reference - other) ** 2).sum())
    return float("inf") if noise == 0 else 10 * np.log10(float((reference**2).sum()) / noise)


@pytest.fixture
def no_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ffmpeg tools are out of reach: any spawn fails with 'ffmpeg not found'."""
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv("VOXFLOW_FFMPEG_DIR", str(empty))


def prepare(src: Path, wav: Path) -> PreparedAudio:
    info = media.probe(str(src))
    return media.prepare_audio(
        str(src), str(wav), silence_db=SILENCE_DB, min_silence_s=MIN_SILENCE_S, expected_ms=info.duration_ms
    )


def assert_agrees(prepared: PreparedAudio, reference: tuple, *, min_snr_db: float = 40.0) -> None:
    samples, pauses, peak = reference
    ours = read_wav(prepared.wav_path)
    assert abs(len(ours) - len(samples)) <= 16, "durations differ by more than one 1 ms frame"
    assert abs(prepared.duration_ms - len(samples) / 16) <= 1
    n = min(len(ours), len(samples))
    assert snr_db(samples[:n], ours[:n]) > min_snr_db
    assert len(prepared.silences) == len(pauses), (prepared.silences, pauses)
    for span, (start, end) in zip(prepared.silences, pauses, strict=True):
        assert abs(span.start_ms - start * 1000) <= 50 and abs(span.end_ms - end * 1000) <= 50
    assert abs(prepared.peak_db - peak) <= 0.1
    assert not prepared.truncated and prepared.decode_warning == ""


@pytest.mark.parametrize("clip", CLIPS)
def test_short_clip_in_process_agrees_with_ffmpeg(clip: str, samples: Path, tmp_path: Path, no_ffmpeg) -> None:
    prepared = prepare(samples / clip, tmp_path / "ours.wav")  # no ffmpeg reachable: all in process
    assert_agrees(prepared, ffmpeg_reference(samples / clip, tmp_path / "ref.wav"))


def test_stereo_44k_cut_with_pauses_agrees_with_ffmpeg(samples: Path, tmp_path: Path) -> None:
    """45 s of multilingual speech as 44.1 kHz stereo FLAC: downmix + resample + 9 pauses."""
    cut = tmp_path / "cut.flac"
    subprocess.run(["ffmpeg", "-v", "error", "-t", "45", "-i", str(samples / "multilingual.mp3"),
                    "-ar", "44100", "-ac", "2", str(cut)], check=True)  # fmt: skip
    reference = ffmpeg_reference(cut, tmp_path / "ref.wav")
    assert len(reference[1]) >= 5
    assert_agrees(prepare(cut, tmp_path / "ours.wav"), reference)


def test_mp3_decoders_of_two_libav_versions_agree_on_pauses(samples: Path, tmp_path: Path) -> None:
    """PyAV bundles a newer libav than the system ffmpeg: their MP3 decoders differ by ≈ 28 dB
    SNR on this file, yet durations and pauses agree."""
    src = samples / "multilingual.mp3"
    assert_agrees(prepare(src, tmp_path / "ours.wav"), ffmpeg_reference(src, tmp_path / "ref.wav"), min_snr_db=20)


def test_probe_in_process_matches_ffprobe(samples: Path, no_ffmpeg) -> None:
    info = media.probe(str(samples / "jfk video.mp4"))
    assert (info.format_name, info.audio_codec, info.sample_rate, info.channels, info.has_video) == (
        "mov,mp4,m4a,3gp,3g2,mj2", "aac", 44100, 1, True
    )  # fmt: skip
    assert media.probe(str(samples / "jfk.flac")).duration_ms == 11_000


def test_damaged_files_still_get_ffmpegs_verdict(samples: Path, tmp_path: Path) -> None:
    """What PyAV cannot read cleanly goes to the ffmpeg tools, with their messages."""
    cut = tmp_path / "cut.mp3"
    cut.write_bytes((samples / "jfk.mp3").read_bytes()[:40_000])
    prepared = prepare(cut, tmp_path / "c.wav")
    assert prepared.truncated and "truncated" in prepared.decode_warning
    text = tmp_path / "notes.mp3"
    text.write_text("not audio\n" * 50)
    with pytest.raises(AudioError, match="not a readable audio or video file"):
        media.probe(str(text))
