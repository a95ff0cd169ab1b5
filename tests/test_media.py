"""media.py on real files with the real ffmpeg: probing, streaming preparation, pauses, chunks."""

from __future__ import annotations

import resource
import subprocess
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxflow import media
from voxflow.errors import AudioError
from voxflow.models import Span


def test_probe_reports_streams_and_duration(samples: Path) -> None:
    info = media.probe(str(samples / "jfk.flac"))
    assert (info.audio_codec, info.sample_rate, info.channels) == ("flac", 44100, 2)
    assert 10_900 <= info.duration_ms <= 11_100
    video = media.probe(str(samples / "jfk video.mp4"))
    assert video.has_video and video.audio_codec == "aac"


def test_probe_rejects_text_and_empty_files(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp3"
    fake.write_text("not audio at all\n" * 10)
    with pytest.raises(AudioError, match="not a readable audio"):
        media.probe(str(fake))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        media.probe(str(empty))


def test_prepare_audio_gives_16k_mono_and_pauses(samples: Path, tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    prepared = media.prepare_audio(str(samples / "beckett.wav"), str(wav))
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=sample_rate,channels",
            "-of",
            "csv=p=0",
            str(wav),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "16000,1"
    assert abs(prepared.duration_ms - 9963) < 50
    assert len(prepared.silences) >= 4, "beckett has long pauses between phrases"
    assert not prepared.truncated and prepared.peak_db > -20


def test_video_takes_first_audio_stream(samples: Path, tmp_path: Path) -> None:
    prepared = media.prepare_audio(str(samples / "jfk video.mp4"), str(tmp_path / "v.wav"))
    assert abs(prepared.duration_ms - 11_000) < 100


def test_truncated_mp3_decodes_as_far_as_it_can(samples: Path, tmp_path: Path) -> None:
    data = (samples / "jfk.mp3").read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2])
    expected = media.probe(str(cut)).duration_ms
    prepared = media.prepare_audio(str(cut), str(tmp_path / "c.wav"), expected_ms=expected)
    assert prepared.truncated and "truncated" in prepared.decode_warning
    assert 4_000 < prepared.duration_ms < 7_000


def test_whole_file_is_never_held_in_memory(samples: Path, tmp_path: Path) -> None:
    """20 minutes of 44.1 kHz stereo (≈ 200 MB decoded) prepared with flat Python memory."""
    long = tmp_path / "long.flac"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-stream_loop",
            "110",
            "-i",
            str(samples / "jfk.flac"),
            "-c:a",
            "flac",
            str(long),
        ],
        check=True,
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    prepared = media.prepare_audio(str(long), str(tmp_path / "l.wav"))
    spans = media.plan_chunks(prepared.duration_ms, prepared.silences, 600_000)
    for span in spans:
        assert len(media.read_pcm(prepared.wav_path, span)) == span.duration_ms * 32
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert prepared.duration_ms > 1_200_000 and len(spans) == 3
    assert grown_mb < 60, f"Python memory grew {grown_mb:.0f} MB"


def test_quietest_point_finds_an_inserted_gap(samples: Path, tmp_path: Path) -> None:
    src = tmp_path / "gap.wav"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(samples / "jfk.flac"),
            "-af",
            "aresample=16000,volume=enable='between(t,5.0,5.4)':volume=0",
            "-ac",
            "1",
            str(src),
        ],
        check=True,
    )
    prepared = media.prepare_audio(str(src), str(tmp_path / "g.wav"))
    cut = media.quietest_point(prepared.wav_path, Span(3_000, 8_000))
    assert 4_950 <= cut <= 5_450


def test_encode_pcm_formats_round_trip(samples: Path, tmp_path: Path) -> None:
    prepared = media.prepare_audio(str(samples / "spk1_snt1.wav"), str(tmp_path / "s.wav"))
    pcm = media.read_pcm(prepared.wav_path, Span(0, 2_000))
    flac = media.encode_pcm(pcm, "flac")
    assert flac[:4] == b"fLaC" and len(flac) < len(pcm)
    assert media.encode_pcm(pcm, "mp3")[:3] in (b"ID3", b"\xff\xfb", b"\xff\xf3")


@given(
    duration=st.integers(1, 4_000_000),
    max_chunk=st.integers(5_000, 900_000),
    pauses=st.lists(st.tuples(st.integers(0, 4_000_000), st.integers(1, 5_000)), max_size=40),
)
def test_plan_chunks_tiles_the_recording(duration: int, max_chunk: int, pauses: list) -> None:
    silences = sorted((Span(s, min(s + d, duration)) for s, d in pauses if s < duration), key=lambda x: x.start_ms)
    spans = media.plan_chunks(duration, silences, max_chunk)
    assert spans[0].start_ms == 0 and spans[-1].end_ms == duration
    for a, b in pairwise(spans):
        assert a.end_ms == b.start_ms
    assert all(0 < s.duration_ms <= max_chunk for s in spans)


def test_plan_chunks_cuts_inside_pauses() -> None:
    spans = media.plan_chunks(100_000, [Span(38_000, 39_000), Span(70_000, 72_000)], 40_000)
    assert spans[0].end_ms == 38_500 and spans[1].end_ms == 71_000


def test_looks_like_media_by_extension_or_header() -> None:
    assert media.looks_like_media("a.MKV", b"")
    assert media.looks_like_media("recording", b"RIFF\x00\x00\x00\x00WAVE")
    assert media.looks_like_media("clip.bin", b"\x00\x00\x00\x18ftypmp42")
    assert not media.looks_like_media("notes", b"hello world")
