"""Audiobook assembly with real ffmpeg: timelines, splitting, ACX mastering on the encoded
MP3, ID3 chapter frames (read back with mutagen), M4B chapters (ffprobe), read-along VTT
(webvtt-py) and M3U. The chunk audio is a fast synthetic stand-in for speech (tones with
sentence gaps); the real voice is exercised in test_narration.py."""

from __future__ import annotations

import html
import itertools
import json
import re
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import webvtt

from voxflow import media
from voxflow.engines.base import SpeechAudio, SynthesisOptions, Synthesizer
from voxflow.errors import AudioError, ConfigError
from voxflow.io.outputs import OutputTree
from voxflow.narrate.assembly import Audiobook, render_book
from voxflow.narrate.assembly.chunks import ChunkAudio, analyse_chunk
from voxflow.narrate.assembly.mastering import master_mp3
from voxflow.narrate.assembly.options import AssemblyOptions, BookMeta, Pauses
from voxflow.narrate.assembly.timeline import ChapterAudio, TimelineStats, plan_files
from voxflow.narrate.document import Chapter, Document
from voxflow.narrate.prepare import prepare_document

RATE = 22_050


# ── a fast stand-in for a speech engine ─────────────────────────────────────────────────


def tone_pcm(text: str, rate: int = RATE, ms_per_char: float = 3.0, gain: float = 0.5) -> bytes:
    """Speech-like audio: a modulated tone per sentence, 180 ms of silence between, a little
    silence before and after — shaped like what a TTS engine returns."""
    pieces = [p for p in re.split(r"(?<=[.!?;])\s+", text) if p] or [text]
    out = [np.zeros(rate * 40 // 1000)]
    for i, piece in enumerate(pieces):
        n = max(rate // 20, int(len(piece) * ms_per_char * rate / 1000))
        t = np.arange(n) / rate
        envelope = 0.65 + 0.35 * np.sin(2 * np.pi * 3.0 * t)
        out.append(gain * envelope * np.sin(2 * np.pi * (170 + 35 * (i % 3)) * t))
        out.append(np.zeros(rate * 180 // 1000))
    samples = np.concatenate(out)
    return (np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes()


class ToneSynth(Synthesizer):
    """Implements the Synthesizer protocol in milliseconds; records every text it gets."""

    def __init__(self, model: str = "local/tone-test", *, cost: float = 0.0, max_input_chars: int = 2000) -> None:
        self.model = model
        self.max_input_chars = max_input_chars
        self.cost = cost
        self.calls: list[str] = []

    async def synthesise(self, text: str, options: SynthesisOptions) -> SpeechAudio:
        assert len(text) <= self.max_input_chars, "a chunk over the engine's limit"
        self.calls.append(text)
        return SpeechAudio(tone_pcm(text), RATE, cost_usd=self.cost, generation_id=f"gen-{len(self.calls)}")


def write_wav(path: Path, pcm: bytes, rate: int = RATE) -> ChunkAudio:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return ChunkAudio(str(path), rate, len(pcm) // 2)


def book_of(tmp_path: Path, chapters: list[tuple[str, list[str]]]) -> list[ChapterAudio]:
    doc = Document("mem://b", "txt", "B", None, tuple(Chapter(i, t, tuple(p)) for i, (t, p) in enumerate(chapters)))
    prepared = prepare_document(doc, max_chars=300)
    book = []
    for ch in prepared.chapters:
        audio = []
        for chunk in ch.chunks:
            name = f"{ch.index}-{chunk.seq}.wav"
            audio.append(write_wav(tmp_path / name, tone_pcm(chunk.spoken)))
        book.append(ChapterAudio(ch, tuple(audio)))
    return book


def seconds(stamp: str) -> float:
    """'00:01:02.345' → 62.345"""
    h, m, rest = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(rest)


def ffprobe(path: str | Path, *entries: str) -> dict:
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", *entries, str(path)]
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def ffmpeg_levels(path: str | Path) -> dict[str, float]:
    """Loudness as ffmpeg measures it (astats over 0.5 s windows + ebur128), parsed here."""
    cmd = ["ffmpeg", "-hide_banner", "-nostats", "-i", str(path), "-af",
           "astats=length=0.5:measure_perchannel=none,ebur128", "-f", "null", "-"]  # fmt: skip
    log = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr

    def value(label: str) -> float:
        found = re.findall(rf"{label}: (-?[\d.]+|-inf)", log)
        return float(found[-1]) if found and found[-1] != "-inf" else -200.0

    return {
        "rms": value("RMS level dB"),
        "peak": value("Peak level dB"),
        "floor": value("RMS trough dB"),
        "lufs": float(re.findall(r"I:\s+(-?[\d.]+) LUFS", log)[-1]),
    }


# ── chunk analysis ──────────────────────────────────────────────────────────────────────


def test_analyse_chunk_trims_and_places_sentence_boundaries_in_the_gaps() -> None:
    text = "One two three four. Five six. Seven eight nine ten eleven."
    pcm = np.frombuffer(tone_pcm(text), dtype=np.int16)
    weights = [len("One two three four."), len("Five six."), len("Seven eight nine ten eleven.")]
    shape = analyse_chunk(pcm, RATE, weights)
    assert 0 < shape.start <= RATE * 40 // 1000  # 40 ms of lead-in, minus the guard
    assert len(pcm) - shape.end >= RATE * 100 // 1000  # most of the 180 ms tail trimmed
    assert len(shape.boundaries) == 2
    for boundary in shape.boundaries:  # each boundary sits in silence
        at = shape.start + boundary
        assert np.abs(pcm[at - 200 : at + 200].astype(np.int32)).max() == 0


def test_silent_chunk_has_no_frames() -> None:
    shape = analyse_chunk(np.zeros(RATE, dtype=np.int16), RATE, [5])
    assert shape.frames == 0


# ── planning ────────────────────────────────────────────────────────────────────────────


def _long_book(tmp_path: Path) -> list[ChapterAudio]:
    paragraph = "A sentence of some length to make audio. Another one follows it here."
    return book_of(tmp_path, [("One", [paragraph] * 6), ("Two", [paragraph] * 2), ("Three", [paragraph] * 5)])


def test_per_chapter_files_split_at_paragraphs_when_too_long(tmp_path: Path) -> None:
    book = _long_book(tmp_path)
    meta = BookMeta("B", "A", "n", "b")
    options = AssemblyOptions(max_file_ms=8_000)  # not valid for a real run; plans only
    plans = plan_files(book, meta, options)
    assert all(p.duration_ms <= 8_000 for p in plans)
    names = [p.name for p in plans]
    assert names[0] == "01 - One (part 1)" and "02 - Two" in names
    placed = [c.chunk for p in plans for c in p.clips if c.chunk is not None]
    expected = [c for ch in book for c in ch.chapter.chunks]
    assert placed == expected  # every chunk once, in order
    for p in plans:  # room tone at both ends, never a pause at a cut
        assert p.clips[0].pause == "head" and p.clips[-1].pause == "tail"
        assert p.clips[1].chunk is not None and p.clips[-2].chunk is not None


def test_single_file_chapters_tile_the_file(tmp_path: Path) -> None:
    book = _long_book(tmp_path)
    plans = plan_files(book, BookMeta("B", "A", "n", "b"), AssemblyOptions(per_chapter=False))
    (plan,) = plans
    spans = plan.chapters()
    assert [s.title for s in spans] == ["One", "Two", "Three"]
    assert spans[0].start_ms == 0 and spans[-1].end_ms == plan.duration_ms
    assert all(a.end_ms == b.start_ms for a, b in itertools.pairwise(spans))
    pauses = Pauses()
    expected = sum(c.frames for c in plan.clips if c.chunk is not None) * 1000 // RATE
    expected += pauses.head_ms + pauses.tail_ms + 2 * pauses.chapter_ms
    expected += 3 * pauses.heading_ms + (5 + 1 + 4) * pauses.paragraph_ms
    assert abs(plan.duration_ms - expected) <= 5


def test_single_file_splits_between_chapters(tmp_path: Path) -> None:
    book = _long_book(tmp_path)
    plans = plan_files(book, BookMeta("B", "A", "n", "b"), AssemblyOptions(per_chapter=False, max_file_ms=15_000))
    assert len(plans) >= 2 and all(p.duration_ms <= 15_000 for p in plans)
    assert plans[0].name == "b - Part 1" and plans[0].title.startswith("B (part 1 of")


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError):
        AssemblyOptions(pauses=Pauses(head_ms=200)).validate()
    with pytest.raises(ConfigError):
        AssemblyOptions(pauses=Pauses(tail_ms=6000)).validate()
    with pytest.raises(ConfigError):
        AssemblyOptions(formats=("wav",)).validate()


# ── rendering with ffmpeg ───────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Audiobook, list[ChapterAudio], Path]:
    tmp = tmp_path_factory.mktemp("book")
    book = book_of(
        tmp,
        [
            ("The First Chapter", ["It begins here. And goes on a while.", "A second paragraph, short."]),
            ("Second & Last; #2 = end", ["Here it ends; quite soon. The end."]),
        ],
    )
    cover = (Path(__file__).resolve().parent.parent / "sample_data/texts/aesop-second-selection.epub").read_bytes()
    from voxflow.narrate.read import read_document

    doc = read_document(str(Path(__file__).resolve().parent.parent / "sample_data/texts/aesop-second-selection.epub"))
    assert cover and doc.cover
    meta = BookMeta("A Test Book", "Some Author", "a synthetic voice", "test-book", doc.cover, doc.cover_mime, "en")
    out = OutputTree(str(tmp / "out"))
    options = AssemblyOptions(per_chapter=False, formats=("mp3", "m4b"))
    return render_book(book, meta, options, out, "audiobooks/test-book"), book, tmp / "out"


def test_single_file_mp3_is_cbr_mono_44k_with_id3_chapters(rendered) -> None:
    from mutagen.id3 import ID3
    from mutagen.mp3 import MP3

    book, _chapters, _out = rendered
    (mp3,) = book.files
    probe = ffprobe(mp3.uri, "-show_streams", "-show_format")
    stream = probe["streams"][0]
    assert (stream["codec_name"], stream["sample_rate"], stream["channels"]) == ("mp3", "44100", 1)
    assert abs(int(stream["bit_rate"]) - 192_000) <= 1000
    tags = ID3(mp3.uri)
    assert str(tags["TIT2"]) == "A Test Book" and str(tags["TPE1"]) == "Some Author"
    assert str(tags["TALB"]) == "A Test Book" and str(tags["TRCK"]) == "1/1"
    assert tags.getall("APIC")[0].data.startswith(b"\x89PNG")
    (toc,) = tags.getall("CTOC")
    chaps = sorted(tags.getall("CHAP"), key=lambda c: c.start_time)
    assert toc.child_element_ids == [c.element_id for c in chaps]
    assert [str(c.sub_frames["TIT2"]) for c in chaps] == ["The First Chapter", "Second & Last; #2 = end"]
    length_ms = MP3(mp3.uri).info.length * 1000
    assert chaps[-1].end_time <= length_ms + 1 and chaps[0].start_time == 0


def test_duration_is_chunk_audio_plus_pauses(rendered) -> None:
    book, _chapters, _out = rendered
    (plan,) = book.plans
    speech_ms = sum(c.frames for c in plan.clips if c.chunk is not None) * 1000 / RATE
    p = Pauses()
    pauses_ms = p.head_ms + p.tail_ms + p.chapter_ms + 2 * p.heading_ms + p.paragraph_ms
    # the first paragraph has two sentences in one chunk: no sentence pause between chunks
    probed = float(ffprobe(book.files[0].uri, "-show_format")["format"]["duration"]) * 1000
    assert abs(probed - (speech_ms + pauses_ms)) <= 0.01 * (speech_ms + pauses_ms)


def test_encoded_file_meets_the_acx_levels(rendered) -> None:
    book, _chapters, _out = rendered
    levels = ffmpeg_levels(book.files[0].uri)
    assert -23.0 <= levels["rms"] <= -18.0
    assert levels["peak"] <= -3.0
    assert levels["floor"] <= -60.0
    report = book.files[0].mastering
    assert report is not None and report.passed
    assert {r.rule for r in report.rules} >= {
        "rms",
        "peak",
        "noise_floor",
        "room_tone_head",
        "room_tone_tail",
        "format",
    }


def test_read_along_vtt_and_playlist(rendered) -> None:
    book, chapters, _out = rendered
    vtt_path = next(f.uri for f in book.extras if f.fmt == "vtt")
    cues = webvtt.read(vtt_path)
    duration_s = book.files[0].duration_ms / 1000
    times = [(seconds(c.start), seconds(c.end)) for c in cues]
    assert all(0 <= a < b <= duration_s for a, b in times)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(times))
    sentences = [s for ch in chapters for chunk in ch.chapter.chunks for s in chunk.sentences]
    assert [html.unescape(" ".join(c.text.split())) for c in cues] == sentences
    m3u = next(f.uri for f in book.extras if f.fmt == "m3u")
    lines = Path(m3u).read_text().splitlines()
    assert lines[0] == "#EXTM3U" and (Path(m3u).parent / lines[-1]).is_file()


def test_m4b_has_chapter_atoms_and_cover(rendered) -> None:
    book, _chapters, _out = rendered
    m4b = next(f.uri for f in book.extras if f.fmt == "m4b")
    probe = ffprobe(m4b, "-show_chapters", "-show_streams")
    assert [c["tags"]["title"] for c in probe["chapters"]] == ["The First Chapter", "Second & Last; #2 = end"]
    kinds = {s["codec_type"]: s for s in probe["streams"]}
    assert kinds["audio"]["codec_name"] == "aac"
    assert kinds["video"]["disposition"]["attached_pic"] == 1


def test_nothing_is_left_in_the_work_folder(rendered) -> None:
    _book, _chapters, out = rendered
    work = out / ".voxflow" / "work"
    assert not any(work.iterdir())


def _wav_of(tmp_path: Path, samples: np.ndarray) -> str:
    path = tmp_path / "in.wav"
    write_wav(path, (np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return str(path)


@pytest.mark.parametrize("kind", ["quiet", "clipped"])
def test_mastering_brings_quiet_and_loud_audio_into_spec(tmp_path: Path, kind: str) -> None:
    t = np.arange(RATE * 8) / RATE
    if kind == "quiet":
        samples = 0.01 * np.sin(2 * np.pi * 200 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    else:
        samples = np.sign(np.sin(2 * np.pi * 150 * t))  # full-scale square: peaks at 0 dBFS
    pause = np.zeros(RATE)  # room tone at both ends, as in every planned file
    samples = np.concatenate([pause, samples, pause])
    wav = _wav_of(tmp_path, samples)
    x = (np.clip(samples, -1, 1) * 32767).astype(np.int16).astype(float)
    rms = 20 * np.log10(np.sqrt((x**2).mean()) / 32768)
    stats = TimelineStats(len(x), rms, 20 * np.log10(np.abs(x).max() / 32768))
    report = master_mp3(wav, str(tmp_path / "o.mp3"), stats, AssemblyOptions(), name="o.mp3")
    assert report.passed, report.as_dict()
    levels = ffmpeg_levels(tmp_path / "o.mp3")
    assert -23 <= levels["rms"] <= -18 and levels["peak"] <= -3


def test_a_failure_while_rendering_writes_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    book = book_of(tmp_path, [("One", ["First chapter."]), ("Two", ["Second chapter."])])
    calls = []
    real = media.encode_mastered

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise AudioError("ffmpeg could not encode the mp3: disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(media, "encode_mastered", flaky)
    out = OutputTree(str(tmp_path / "out"))
    with pytest.raises(AudioError):
        render_book(book, BookMeta("B", None, "n", "b"), AssemblyOptions(), out, "audiobooks/b")
    assert not list((tmp_path / "out").glob("audiobooks/**/*.mp3"))
    assert not any((tmp_path / "out" / ".voxflow" / "work").iterdir())
