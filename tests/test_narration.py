"""The narration job end to end: the sample corpus through the real embedded voice (Piper)
and real ffmpeg, read back by independent readers (ffprobe, mutagen, webvtt-py, DuckDB);
reruns, chunk-cache resume (also after a kill -9), every bad input of the issue, the
lexicon, the budget, the OpenRouter engine against the emulator, and the Prefect flow."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import duckdb
import pytest
import webvtt

from tests.test_audiobook import ToneSynth, ffmpeg_levels, ffprobe, seconds
from voxflow.cli.narrate import run_narrate
from voxflow.engines.base import SpeechAudio, SynthesisOptions, Synthesizer
from voxflow.errors import RequestRejected, RunAbort, UnknownModel
from voxflow.io.outputs import OutputTree
from voxflow.narrate import (
    ChunkCache,
    NarrationOptions,
    narrate_document,
    plan_document,
    plan_narration,
    run_inline,
    synthesis_options,
)
from voxflow.narrate.prepare import prepare_document
from voxflow.narrate.read import read_document
from voxflow.settings import OpenRouterSettings, Settings

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ROOT / "sample_data" / "texts"
LOCAL = "local/en_US-joe-medium"


class Counting(Synthesizer):
    """Wraps a real engine and records what it is asked to speak."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model = inner.model
        self.max_input_chars = inner.max_input_chars
        self.calls: list[str] = []

    async def synthesise(self, text: str, options: SynthesisOptions) -> SpeechAudio:
        self.calls.append(text)
        return await self.inner.synthesise(text, options)


def piper() -> Counting:
    from voxflow.engines.local import LocalSynthesizer

    return Counting(LocalSynthesizer.shared(LOCAL))


def local_settings(out: Path, **fields: Any) -> Settings:
    return Settings(out=str(out), model=fields.pop("model", LOCAL), **fields)


def narrate_dir(source: Path, out: Path, synth: Any, options: NarrationOptions | None = None, **fields: Any):
    settings = local_settings(out, model=synth.model, **fields)
    plan = plan_narration(str(source), settings, options)
    return plan, run_inline(plan, synth=synth)


def mp3s(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.mp3"))


# ── the sample corpus, narrated once for this module with the real voice ────────────────


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("corpus")
    source = tmp / "texts"
    shutil.copytree(TEXTS, source, ignore=shutil.ignore_patterns("*.py", "README.md"))
    out = tmp / "out"
    synth = piper()
    plan, summary = narrate_dir(source, out, synth)
    return {"source": source, "out": out, "synth": synth, "plan": plan, "summary": summary}


def test_corpus_is_narrated(corpus: dict[str, Any]) -> None:
    summary = corpus["summary"]
    assert (summary.done, summary.failed, summary.skipped, summary.exit_code) == (3, 0, 0, 0)
    assert len(corpus["synth"].calls) > 10


@pytest.mark.parametrize("name", ["alice-excerpt.txt", "aesop-fables.md", "aesop-second-selection.epub"])
def test_done_when(corpus: dict[str, Any], name: str) -> None:
    """Per document: MP3s ffprobe and mutagen read; duration = chunk audio + pauses (±1 %);
    chapters and titles equal the document's; loudness inside ACX; the VTT parses and lies
    within the audio."""
    from mutagen.id3 import ID3
    from mutagen.mp3 import MP3

    from voxflow.narrate.assembly.chunks import analyse_chunk, load_samples
    from voxflow.narrate.assembly.options import Pauses

    out, source = corpus["out"], corpus["source"]
    folder = out / "audiobooks" / name.rsplit(".", 1)[0]
    files = mp3s(folder)
    prepared = prepare_document(read_document(str(source / name)), max_chars=2000)
    assert len(files) == len(prepared.chapters)
    cache = ChunkCache(out / ".voxflow" / "tts-cache")
    digest = synthesis_options(local_settings(out), NarrationOptions(), LOCAL).digest()
    pauses = Pauses()
    total_ms = 0.0
    for path, chapter in zip(files, prepared.chapters, strict=True):
        stream = ffprobe(path, "-show_streams", "-show_format")
        assert stream["streams"][0]["codec_name"] == "mp3"
        assert stream["streams"][0]["sample_rate"] == "44100" and stream["streams"][0]["channels"] == 1
        duration_ms = float(stream["format"]["duration"]) * 1000
        tags = ID3(path)
        assert str(tags["TIT2"]) == chapter.title
        assert [str(c.sub_frames["TIT2"]) for c in tags.getall("CHAP")] == [chapter.title]
        assert MP3(path).info.bitrate == 192_000
        # expected: every chunk's speech (leading/trailing silence trimmed) plus the pauses
        speech_ms = 0.0
        for chunk in chapter.chunks:
            audio = cache.get(chunk.cache_key(digest))
            assert audio is not None
            shape = analyse_chunk(load_samples(audio, audio.sample_rate), audio.sample_rate, chunk.weights)
            speech_ms += shape.frames * 1000 / audio.sample_rate
        body = chapter.body
        gaps = sum(pauses.paragraph_ms if c.ends_paragraph else pauses.sentence_ms for c in body[:-1])
        expected = speech_ms + pauses.head_ms + pauses.heading_ms + gaps + pauses.tail_ms
        assert abs(duration_ms - expected) <= 0.01 * expected, (path.name, duration_ms, expected)
        levels = ffmpeg_levels(path)
        assert -23.0 <= levels["rms"] <= -18.0 and levels["peak"] <= -3.0 and levels["floor"] <= -60.0, levels
        vtt = webvtt.read(str(path.with_suffix(".vtt")))
        times = [(seconds(c.start), seconds(c.end)) for c in vtt]
        assert times and all(0 <= a < b <= duration_ms / 1000 for a, b in times)
        assert vtt.captions[0].text.replace("\n", " ") == chapter.heading.text
        total_ms += duration_ms
    book_vtt = webvtt.read(str(folder / f"{folder.name}.vtt"))
    assert seconds(book_vtt.captions[-1].end) <= total_ms / 1000
    playlist = (folder / f"{folder.name}.m3u").read_text().splitlines()
    assert [line for line in playlist if not line.startswith("#")] == [p.name for p in files]
    report = json.loads((folder / f"{folder.name}.report.json").read_text())
    assert all(m["passed"] for m in report["mastering"]) and len(report["mastering"]) == len(files)


def test_catalog_rows_and_manifest(corpus: dict[str, Any]) -> None:
    out = corpus["out"]
    parts = f"read_parquet('{out}/catalog/narrations/*.parquet', union_by_name=true)"
    rows = duckdb.sql(f"select * from {parts} order by rel_path, chapter_index").fetchall()
    columns = [
        d[0]
        for d in duckdb.sql(f"select * from read_parquet('{out}/catalog/narrations/*.parquet') limit 0").description
    ]
    for column in ("document_id", "source_uri", "chapter_index", "chapter_title", "model", "voice", "n_chars",
                   "duration_s", "cost_usd", "output_uri", "status", "error_message", "run_id"):  # fmt: skip
        assert column in columns
    records = [dict(zip(columns, r, strict=True)) for r in rows]
    assert len(records) == 10 and {r["status"] for r in records} == {"done"}
    assert all(r["duration_s"] > 5 and Path(r["output_uri"]).is_file() and r["mastering_passed"] for r in records)
    alice = [r for r in records if r["rel_path"] == "alice-excerpt.txt"]
    assert [r["chapter_title"] for r in alice] == [
        "Chapter I. Down the Rabbit-Hole",
        "Chapter II. The Pool of Tears",
        "Chapter III. A Caucus-Race and a Long Tale",
    ]
    manifest = json.loads(Path(corpus["summary"].manifest).read_text())
    assert manifest["counts"]["done"] == 3 and manifest["settings"]["model"] == LOCAL
    assert "api_key" not in json.dumps(manifest)
    assert len(manifest["mastering"]) == 3 and all(f["passed"] for m in manifest["mastering"] for f in m["files"])


def test_rerun_synthesises_nothing_and_skips_before_any_work(corpus: dict[str, Any]) -> None:
    synth = piper()
    plan, summary = narrate_dir(corpus["source"], corpus["out"], synth)
    assert plan.todo == [] and len(plan.skipped) == 3
    assert synth.calls == [] and summary.exit_code == 0 and summary.skipped == 3
    started = time.monotonic()
    code = run_narrate(str(corpus["source"]), local_settings(corpus["out"]), echo=lambda _: None)
    assert code == 0 and time.monotonic() - started < 20  # no engine, no Prefect start-up


def test_chunk_cache_resume_synthesises_only_missing_chunks(corpus: dict[str, Any]) -> None:
    out, source = corpus["out"], corpus["source"]
    prepared = prepare_document(read_document(str(source / "aesop-fables.md")), max_chars=2000)
    digest = synthesis_options(local_settings(out), NarrationOptions(), LOCAL).digest()
    cache = ChunkCache(out / ".voxflow" / "tts-cache")
    lost = [c for c in prepared.chunks() if c.kind == "body"][:2]
    for chunk in lost:
        cache.forget(chunk.cache_key(digest))
    synth = piper()
    _plan, summary = narrate_dir(source / "aesop-fables.md", out, synth, force=True)
    assert summary.done == 1
    assert sorted(synth.calls) == sorted(c.spoken for c in lost)


def test_kill_9_mid_book_then_rerun_synthesises_only_what_is_missing(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    paragraphs = [f"This is paragraph number {n}, spoken by the embedded voice for the test." for n in range(1, 9)]
    (source / "story.md").write_text("# Story\n\n" + "\n\n".join(paragraphs) + "\n")
    out = tmp_path / "out"
    script = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from voxflow.narrate import plan_narration, run_inline\n"
        "from voxflow.settings import Settings\n"
        f"s = Settings(out={str(out)!r}, model={LOCAL!r}, concurrency=1)\n"
        f"run_inline(plan_narration({str(source)!r}, s))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    cache_dir = out / ".voxflow" / "tts-cache"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(cache_dir.glob("*/*.wav"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # An entry is whole once its record (.json, written after the .wav) exists: a kill between
    # the two leaves a .wav that the rerun must synthesise again.
    cached = len([p for p in cache_dir.glob("*/*.wav") if p.with_suffix(".json").exists()])
    assert 2 <= cached < 9, "the run was not killed mid-book"
    assert not list((out / "audiobooks").rglob("*.mp3")) if (out / "audiobooks").exists() else True
    for path in cache_dir.glob("*/*.wav"):  # atomic writes: a cached chunk is always whole
        with wave.open(str(path), "rb") as wav:
            assert wav.getnframes() * 2 + 44 == path.stat().st_size
    synth = piper()
    _plan, summary = narrate_dir(source, out, synth)
    assert summary.done == 1
    assert len(synth.calls) == 9 - cached  # the heading + 8 paragraphs, minus what was cached


# ── bad inputs: each gets a clear failed row (or is handled), the batch goes on ─────────


def make_bad_corpus(folder: Path) -> dict[str, tuple[str, str | None]]:
    """name → (status, part of the error message)."""
    folder.mkdir(parents=True, exist_ok=True)
    epub = (TEXTS / "aesop-second-selection.epub").read_bytes()
    (folder / "empty.txt").write_bytes(b"")
    (folder / "binary.txt").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 40)
    (folder / "broken.epub").write_bytes(epub[: len(epub) // 2])
    (folder / "latin1.txt").write_bytes("Chapter 1\n\nCafé au lait — naïve façade, déjà vu.\n".encode("cp1252"))
    words = " ".join(f"word{i % 89}" for i in range(3000))
    (folder / "one-sentence.txt").write_text(words + "\n")
    (folder / "only-markup.md").write_text("```\nprint(1)\n```\n\n<div>x</div>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    (folder / "only-space.txt").write_text("   \n\n\t\t\n   \n")
    (folder / "emoji.txt").write_text("Hello there 😀🎉, the voice says 你好 and goes on.\n\nThe end.\n")
    (folder / "only-cjk.txt").write_text("你好世界。\n\n春眠不觉晓。\n")
    (folder / "good.md").write_text("# Good\n\nA plain, good document.\n")
    return {
        "empty.txt": ("failed", "empty"),
        "binary.txt": ("failed", "not a text file"),
        "broken.epub": ("failed", "not a readable EPUB"),
        "latin1.txt": ("done", None),
        "one-sentence.txt": ("done", None),
        "only-markup.md": ("failed", "only markup"),
        "only-space.txt": ("failed", "only whitespace"),
        "emoji.txt": ("done", None),
        "only-cjk.txt": ("failed", "cannot speak"),
        "good.md": ("done", None),
    }


def test_every_bad_input_gets_a_clear_row_and_the_batch_goes_on(tmp_path: Path) -> None:
    expected = make_bad_corpus(tmp_path / "in")
    out = tmp_path / "out"
    synth = ToneSynth()
    _plan, summary = narrate_dir(tmp_path / "in", out, synth)
    books = {b["file"]: b for b in summary.books}
    for name, (status, message) in expected.items():
        book = books[name]
        assert book["status"] == status, (name, book)
        if message:
            assert book["error"].startswith(f"{name}: ") and message in book["error"], book["error"]
            assert not (out / "audiobooks" / name.rsplit(".", 1)[0]).exists()  # no half-written MP3
        else:
            assert mp3s(out / "audiobooks" / name.rsplit(".", 1)[0])
    assert summary.exit_code == 1 and summary.failed == 6 and summary.done == 4
    assert all(len(text) <= synth.max_input_chars for text in synth.calls)
    assert not any(ch in "".join(synth.calls) for ch in "😀🎉你好")
    long_calls = [t for t in synth.calls if t.startswith("word")]
    assert len(long_calls) >= 10 and " ".join(long_calls).split() == [f"word{i % 89}" for i in range(3000)]
    vtt = (out / "audiobooks" / "latin1" / "latin1.vtt").read_text()
    assert "Café au lait" in vtt
    failed = duckdb.sql(
        f"select rel_path, error_kind, error_message from read_parquet('{out}/catalog/narrations/*.parquet') "
        "where status = 'failed' order by rel_path"
    ).fetchall()
    assert [r[0] for r in failed] == sorted(n for n, (s, _m) in expected.items() if s == "failed")
    assert {r[1] for r in failed} == {"TextError"}


def test_a_crash_while_assembling_leaves_no_mp3_and_resumes_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voxflow import media

    source = tmp_path / "in"
    source.mkdir()
    (source / "book.md").write_text("# One\n\nFirst chapter text.\n\n# Two\n\nSecond chapter text.\n")
    out = tmp_path / "out"
    real = media.encode_mastered
    calls = []

    def dies_on_the_second_file(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(*args, **kwargs)

    monkeypatch.setattr(media, "encode_mastered", dies_on_the_second_file)
    synth = ToneSynth()
    _plan, summary = narrate_dir(source, out, synth)
    (book,) = summary.books
    assert book["status"] == "failed" and "No space left" in book["error"]
    assert not list(out.rglob("*.mp3"))
    monkeypatch.setattr(media, "encode_mastered", real)
    again = ToneSynth()
    _plan, summary = narrate_dir(source, out, again)
    assert summary.done == 1 and again.calls == []  # every chunk came from the cache
    assert len(mp3s(out / "audiobooks" / "book")) == 2


def test_changing_a_lexicon_entry_resynthesises_only_its_sentences(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    (source / "river.md").write_text(
        "# River\n\nThe Thames was cold.\n\nNothing else here.\n\nBoats on the Thames.\n\nPlain words.\n"
    )
    lexicon = source / "river.lexicon.toml"
    lexicon.write_text('[words]\nThames = { say = "Temz", ipa = "tɛmz" }\n')
    out = tmp_path / "out"
    first = ToneSynth()
    narrate_dir(source, out, first)
    assert sum("[[ tɛmz ]]" in t for t in first.calls) == 2  # phonemes for the local voice
    lexicon.write_text('[words]\nThames = { say = "Tems", ipa = "tɛms" }\n')
    second = ToneSynth()
    _plan, summary = narrate_dir(source, out, second)
    assert summary.done == 1
    assert sorted(second.calls) == ["Boats on the [[ tɛms ]].", "The [[ tɛms ]] was cold."]


class PickySynth(ToneSynth):
    """Answers 413 (payload too large) to any text over 60 characters."""

    async def synthesise(self, text: str, options: SynthesisOptions) -> SpeechAudio:
        if len(text) > 60:
            self.calls.append(f"413:{len(text)}")
            raise RequestRejected("payload too large", status=413)
        return await super().synthesise(text, options)


def test_a_413_splits_the_chunk_and_retries_the_halves(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    sentence = "The river ran on past the mill, and the miller, who was old, watched it go by the door."
    (source / "mill.md").write_text(f"# Mill\n\n{sentence}\n")
    synth = PickySynth()
    _plan, summary = narrate_dir(source, tmp_path / "out", synth)
    assert summary.done == 1
    spoken = [c for c in synth.calls if not c.startswith("413:")]
    assert any(c.startswith("413:") for c in synth.calls) and all(len(c) <= 60 for c in spoken)
    assert " ".join(c for c in spoken if c != "Mill.").split() == sentence.split()


def test_budget_stops_the_run_with_exit_3(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for n in range(3):
        (source / f"doc{n}.md").write_text(f"# Doc {n}\n\nSome words for document {n}.\n\nAnd more words.\n")
    synth = ToneSynth(cost=0.01)
    _plan, summary = narrate_dir(source, tmp_path / "out", synth, budget_usd=0.025, concurrency=1)
    assert summary.exit_code == 3 and "BudgetExceeded" in summary.aborted
    assert summary.not_started >= 1 and len(synth.calls) <= 3


def test_narrate_document_api_with_per_chapter_off_and_m4b(tmp_path: Path) -> None:
    from voxflow.limits import Budget, RequestLimiter

    doc = tmp_path / "tale.txt"
    doc.write_text("Chapter 1\n\nOnce upon a time.\n\nChapter 2\n\nThey lived happily.\n")
    out = OutputTree(str(tmp_path / "out"))
    settings = local_settings(tmp_path / "out", model="local/tone-test")
    rows = narrate_document(
        str(doc), settings, out, ToneSynth(), RequestLimiter(4), Budget(None), "run-1",
        options=NarrationOptions(per_chapter=False, formats=("mp3", "m4b"), credits=True),
    )  # fmt: skip
    assert [r["chapter_title"] for r in rows] == ["Chapter 1", "Chapter 2"]
    assert rows[0]["output_uri"] == rows[1]["output_uri"] and rows[1]["start_s"] > rows[0]["start_s"] == 0
    folder = tmp_path / "out" / "audiobooks" / "tale"
    assert {p.suffix for p in folder.iterdir()} == {".mp3", ".m4b", ".m3u", ".vtt", ".json"}
    chapters = ffprobe(folder / "tale.m4b", "-show_chapters")["chapters"]
    assert [c["tags"]["title"] for c in chapters] == ["Chapter 1", "Chapter 2"]
    vtt = (folder / "tale.vtt").read_text()  # opening and closing credits, inside the chapters
    assert vtt.index("Narrated by") < vtt.index("Once upon a time") < vtt.index("The End.")


def test_dry_run_plans_without_synthesising(tmp_path: Path) -> None:
    settings = local_settings(tmp_path / "out")
    pricing = {"openai/gpt-4o-mini-tts-2025-12-15": {"prompt": "0.0000006", "audio_output": "0.000012"}}
    plan = plan_document(str(TEXTS / "aesop-fables.md"), settings, pricing=pricing)
    assert [c.title for c in plan.chapters] == [
        "The Wolf and the Lamb",
        "The Bat and the Weasels",
        "The Lion and the Mouse",
    ]
    assert plan.n_chars > 1500 and plan.n_words > 300 and 1.5 < plan.minutes < 5
    assert plan.costs[LOCAL] == 0.0 and plan.costs["openai/gpt-4o-mini-tts-2025-12-15"] > 0
    lines: list[str] = []
    assert run_narrate(str(TEXTS), settings, dry_run=True, echo=lines.append) == 0
    assert not (tmp_path / "out").exists()
    assert any("The Wolf and the Lamb" in line for line in lines)
    broken = tmp_path / "broken.epub"
    broken.write_bytes(b"PK\x03\x04 not really")
    assert plan_document(str(broken), settings).error.startswith("TextError")


# ── OpenRouter speech through the emulator ──────────────────────────────────────────────


@pytest.fixture(scope="module")
def emulator():
    from voxflow.testing.emulator import EmulatorConfig, start_emulator_in_thread

    handle = start_emulator_in_thread(EmulatorConfig())
    yield handle
    handle.stop()


def emulator_settings(url: str, key: str, out: Path, **fields: Any) -> Settings:
    settings = Settings(out=str(out), max_attempts=3, request_timeout_s=60.0, **fields)
    settings.__dict__["openrouter"] = OpenRouterSettings(api_key=key, base_url=url)
    return settings


def test_openrouter_speech_through_the_emulator(emulator: Any, tmp_path: Path) -> None:
    from voxflow.engines.base import get_synthesizer

    source = tmp_path / "in"
    source.mkdir()
    (source / "short.md").write_text("# A Short One\n\nTwo short sentences. Spoken far away.\n")
    settings = emulator_settings(
        emulator.url, emulator.key, tmp_path / "out", model="openai/gpt-4o-mini-tts-2025-12-15", voice="alloy"
    )
    emulator.reset()
    plan = plan_narration(str(source), settings)
    summary = run_inline(plan)
    assert summary.done == 1 and summary.cost_usd > 0
    speech = [e for e in emulator.log() if e["endpoint"] == "speech"]
    assert len(speech) == 2 and all(e["status"] == 200 for e in speech)  # heading + paragraph
    report = json.loads(next((tmp_path / "out").rglob("*.report.json")).read_text())
    assert all(g.startswith("gen-tts-") for g in report["synthesis"]["generation_ids"])
    assert report["mastering"][0]["passed"]
    bad_voice = emulator_settings(
        emulator.url, emulator.key, tmp_path / "out2", model="openai/gpt-4o-mini-tts-2025-12-15", voice="nobody"
    )
    (source / "short.md").write_text("# Changed\n\nSo it is not skipped.\n")
    with pytest.raises(RunAbort) as raised:
        run_inline(plan_narration(str(source), bad_voice))
    assert isinstance(raised.value, UnknownModel)
    assert get_synthesizer(settings).max_input_chars == 4096


# ── the Prefect flow ────────────────────────────────────────────────────────────────────


def test_prefect_flow(prefect_harness: None, tmp_path: Path) -> None:
    from flows.narrate import narrate_flow

    source = tmp_path / "in"
    source.mkdir()
    (source / "note.txt").write_text("A very short note, read by the flow.\n")
    (source / "empty.txt").write_bytes(b"")
    options = {"model": LOCAL, "concurrency": 2}
    summary = narrate_flow(source=str(source), out=str(tmp_path / "out"), options=options)
    assert (summary["done"], summary["failed"], summary["exit_code"]) == (1, 1, 1)
    assert mp3s(tmp_path / "out" / "audiobooks" / "note")
    again = narrate_flow(source=str(source), out=str(tmp_path / "out"), options=options)
    assert (again["done"], again["skipped"], again["failed"]) == (0, 1, 1)


# ── runs of many documents, damaged cache entries, invariants, odd names, bad settings ──

SENTENCES = [
    "Dr. Smith came home at 5 p.m. on Jan. 3 with the news.",
    "It was raining hard outside, and the street was empty.",
    "Was anyone there?",
    "Mrs. Brown said no, not since the morning train left St. Paul's.",
    "The clock struck six; the lamps went on one by one.",
    "Nobody spoke for a long while!",
]


def small_document(n: int) -> str:
    """Three paragraphs of three sentences each, different per document."""
    paragraphs = []
    for p in range(3):
        picked = [SENTENCES[(n + p + k) % len(SENTENCES)] for k in range(3)]
        paragraphs.append(" ".join(picked) + f" Paragraph {p} of document {n} ends here.")
    return "\n\n".join(paragraphs) + "\n"


def vtt_words(path: Path) -> list[str]:
    return re.findall(r"\w+", " ".join(c.text for c in webvtt.read(str(path))))


def test_sixteen_documents_in_eight_threads_keep_every_word(tmp_path: Path) -> None:
    """Case 5 (and 1): sixteen documents narrated at once on 8 threads (the flow's threaded
    path) keep every word: a plain \\w+ count of each source against its read-along VTT
    parsed by webvtt-py (the heading, the file's title, comes first)."""
    from concurrent.futures import ThreadPoolExecutor

    from voxflow.narrate import finish_narration, narrate, open_narration, record_rows

    source = tmp_path / "in"
    source.mkdir()
    texts = {f"doc-{n:02d}": small_document(n) for n in range(16)}
    for stem, text in texts.items():
        (source / f"{stem}.txt").write_text(text)
    for round_ in range(2):
        out = tmp_path / f"out{round_}"
        plan = plan_narration(str(source), Settings(out=str(out), model="local/tone-test", concurrency=8))
        run = open_narration(plan, synth=ToneSynth())
        with ThreadPoolExecutor(max_workers=8) as pool:
            for rows in pool.map(narrate, plan.todo, [run.spec] * len(plan.todo)):
                record_rows(run, rows)
        summary = finish_narration(run)
        assert (summary.done, summary.failed) == (16, 0), summary.failures
        for stem, text in texts.items():
            words = vtt_words(out / "audiobooks" / stem / f"{stem}.vtt")
            expected = re.findall(r"\w+", text)
            assert words[-len(expected) :] == expected, stem
            assert len(words) == len(expected) + len(re.findall(r"\w+", stem))


def test_a_damaged_cache_entry_is_synthesised_again(tmp_path: Path) -> None:
    """Case 2: a truncated WAV in the speech cache (its header still parses) is not reused:
    the chunk is synthesised again, the chapter keeps its length, the report says why."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "story.txt").write_text(small_document(1))
    out = tmp_path / "out"
    first = ToneSynth()
    _plan, summary = narrate_dir(source, out, first)
    assert summary.done == 1
    mp3 = mp3s(out / "audiobooks" / "story")[0]
    length = float(ffprobe(mp3, "-show_format")["format"]["duration"])
    wavs = sorted((out / ".voxflow" / "tts-cache").rglob("*.wav"), key=lambda p: p.stat().st_size)
    victim = wavs[-1]
    data = victim.read_bytes()
    victim.write_bytes(data[: 44 + (len(data) - 44) // 3])
    with wave.open(str(victim)) as w:  # still a WAV header that parses
        assert w.getnframes() > 0
    for path in mp3s(out / "audiobooks" / "story"):
        path.unlink()
    again = ToneSynth()
    _plan, summary = narrate_dir(source, out, again)
    assert summary.done == 1
    assert len(again.calls) == 1  # only the damaged chunk
    assert abs(float(ffprobe(mp3, "-show_format")["format"]["duration"]) - length) < 0.1
    report = json.loads(next((out / "audiobooks" / "story").glob("*.report.json")).read_text())
    assert any("damaged" in w for w in report["synthesis"]["warnings"])


def test_a_sentence_lost_in_preparation_fails_the_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Case 4: when the chunks do not add up to the prepared text (a splitter that drops a
    sentence, as the shared pysbd Segmenter did under threads) the book fails; no 'done'."""
    from voxflow.narrate import prepare

    real = prepare.split_sentences
    monkeypatch.setattr(prepare, "split_sentences", lambda text, language="en": real(text, language)[:1])
    source = tmp_path / "in"
    source.mkdir()
    (source / "story.txt").write_text(small_document(2))
    _plan, summary = narrate_dir(source, tmp_path / "out", ToneSynth())
    assert (summary.done, summary.failed) == (0, 1)
    assert "chunks" in summary.failures[0]["message"]
    assert not list((tmp_path / "out").rglob("*.mp3"))


class Boom(BaseException):
    """Not an Exception: what a task can raise past ordinary handlers."""


@pytest.mark.parametrize("raised", [RuntimeError("disk on fire"), Boom("hard stop")])
def test_the_flow_writes_the_manifest_whatever_a_task_raises(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raised: BaseException
) -> None:
    """Case 6: a task that raises anything still leaves runs/<id>.json naming the document."""
    import tasks.narrate
    from flows.narrate import narrate_flow

    def explode(doc: Any, run: Any) -> Any:
        raise raised

    monkeypatch.setattr(tasks.narrate, "narrate", explode)
    source = tmp_path / "in"
    source.mkdir()
    (source / "note.txt").write_text("A very short note.\n")
    with pytest.raises(BaseException):  # noqa: B017 - whatever the flow lets through
        narrate_flow(source=str(source), out=str(tmp_path / "out"), options={"model": LOCAL})
        raise AssertionError("finished")  # the flow may also return: then the manifest is checked too
    manifests = list((tmp_path / "out" / "runs").glob("*.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["counts"]["failed"] == 1 and manifest["errors"][0]["file"] == "note.txt"


def test_a_file_name_that_is_not_utf8_is_planned_narrated_and_recorded(tmp_path: Path) -> None:
    """Case 7: b'bad\\xff\\xfe.txt' (old NAS shares) is narrated; its rows keep the name
    escaped (backslashreplace) and as raw bytes; the manifest names it."""
    source = tmp_path / "in"
    source.mkdir()
    raw = b"bad\xff\xfe.txt"
    with open(os.path.join(os.fsencode(source), raw), "wb") as f:
        f.write(small_document(3).encode())
    out = tmp_path / "out"
    _plan, summary = narrate_dir(source, out, ToneSynth())
    assert (summary.done, summary.failed) == (1, 0), summary.failures
    parts = f"read_parquet('{out}/catalog/narrations/*.parquet')"
    rows = duckdb.sql(f"select rel_path, rel_path_bytes, status from {parts}").fetchall()
    assert rows and all(r == ("bad\\xff\\xfe.txt", raw, "done") for r in rows)
    manifest = json.loads(Path(summary.manifest).read_text())
    assert manifest["books"][0]["file"] == "bad\\xff\\xfe.txt"
    assert list((out / "audiobooks").rglob("*.mp3"))


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    from typer.testing import CliRunner

    from voxflow.cli import app

    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "400", **(env or {})})
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code, lines


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--lexicon", "/missing.toml"], {}, ["--lexicon", "VOXFLOW_LEXICON", "/missing.toml"]),
        ([], {"VOXFLOW_LEXICON": "/missing.toml"}, ["--lexicon", "VOXFLOW_LEXICON", "/missing.toml"]),
        (["--speed", "0"], {}, ["--speed", "0.25", "4"]),
        (["--voice", "nova"], {}, ["--voice", "VOXFLOW_VOICE", "nova"]),
    ],
)
def test_settings_that_would_be_ignored_are_refused_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], words: list[str]
) -> None:
    """Case 8: exit 2 and one clear line naming the flag, before any work."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "note.txt").write_text("A note.\n")
    out = tmp_path / "out"
    code, lines = cli("narrate", str(source), "--out", str(out), "--model", LOCAL, *args, env=env)
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, lines
    assert all(w in errors[0] for w in words), errors[0]
    assert not any("Traceback" in line for line in lines)
    assert not (out / "audiobooks").exists()


def test_a_bad_lexicon_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[words\nnope")
    source = tmp_path / "in"
    source.mkdir()
    (source / "note.txt").write_text("A note.\n")
    code, lines = cli("narrate", str(source), "--out", str(tmp_path / "out"), "--model", LOCAL, "--lexicon", str(bad))
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "--lexicon" in errors[0] and str(bad) in errors[0], lines


def test_narration_progress_counts_chunks_per_chapter(emulator: Any, tmp_path: Path) -> None:
    """The narration bar's tally, fed by the run's events: chunks to speak and spoken across the
    batch, the current book and chapter. Oracle: the emulator's own log of speech requests."""
    from voxflow import progress
    from voxflow.cli.progress import ChunkTally

    source = tmp_path / "in"
    source.mkdir()
    (source / "one.md").write_text("# First\n\nA sentence here. Another one.\n\n# Second\n\nMore words to say.\n")
    (source / "two.md").write_text("# Only\n\nJust one paragraph.\n")
    settings = emulator_settings(
        emulator.url, emulator.key, tmp_path / "out", model="openai/gpt-4o-mini-tts-2025-12-15", voice="alloy"
    )
    emulator.reset()
    tally = ChunkTally(books_total=2)
    currents: set[str] = set()

    def listen(event: str, data: dict) -> None:
        tally.on_event(event, data)
        currents.add(tally.current)

    unsubscribe = progress.subscribe(listen)
    try:
        run_inline(plan_narration(str(source), settings))
    finally:
        unsubscribe()
    spoken = len([e for e in emulator.log() if e["endpoint"] == "speech" and e["status"] == 200])
    assert spoken > 0
    assert (tally.chunks_done, tally.chunks_total) == (spoken, spoken)
    assert tally.books_done == 2
    assert {"one.md — First", "one.md — Second", "two.md — Only"} <= currents
