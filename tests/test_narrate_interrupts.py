"""Stopping a narration, tested on real `voxflow narrate` processes (the offline Piper voice).

Ctrl-C (SIGINT to the process group) or SIGTERM in the middle of a book: no new chunk is
synthesised, the book in flight is not assembled and gets no catalog row, the documents not
started stay undone, the manifest says ``interrupted`` and the run exits 130. A rerun reuses the
cached chunks (the files the first run wrote are not written again) and finishes every book,
each with every word of its source in its read-along VTT and one done set of catalog rows.
A second Ctrl-C exits at once.

The Ctrl-C run has its own temporary Prefect server, as a user's run does (the terminal's
Ctrl-C reaches it too); the other runs use the session's server, to keep the file short.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import threading
import time
from pathlib import Path

import duckdb
import pytest
import webvtt

from tests.test_audiobook import RATE, tone_pcm
from tests.test_interrupts import Run, manifest, wait_for
from voxflow import interrupts
from voxflow.engines.base import SpeechAudio, SynthesisOptions, Synthesizer
from voxflow.limits import Budget, RequestLimiter
from voxflow.narrate.document import TextChunk
from voxflow.narrate.synthesis import ChunkCache, synthesise_chunks

LONG = "a-long"  # sorted first: the book in flight when the signal arrives (one document at a time)
SHORT = ("b-short",)
PHRASES = (
    "The lighthouse keeper climbed the stairs again",
    "Rain beat against the narrow window",
    "A gull cried somewhere over the grey water",
    "He wrote the hour and the wind in his book",
    "Far below, the boats rocked at their moorings",
)


def long_text(chapters: int = 3, paragraphs: int = 2) -> str:
    """Several chapters of a few paragraphs, each paragraph different (its own chunk)."""
    parts = []
    for c in range(1, chapters + 1):
        parts.append(f"# Chapter {c}")
        for p in range(paragraphs):
            picked = [PHRASES[(c + p + k) % len(PHRASES)] for k in range(2)]
            parts.append(". ".join(picked) + f". Paragraph {p + 1} of chapter {c} ends here.")
    return "\n\n".join(parts) + "\n"


def make_corpus(folder: Path) -> dict[str, str]:
    """stem → text of the documents written under ``folder``."""
    folder.mkdir(parents=True)
    texts = {LONG: long_text()}
    texts.update({stem: f"The {stem.split('-')[0]} note was short. It said only goodbye.\n" for stem in SHORT})
    for stem, text in texts.items():
        (folder / (f"{stem}.md" if stem == LONG else f"{stem}.txt")).write_text(text)
    return texts


def cached_chunks(out: Path) -> dict[Path, tuple[int, int]]:
    """Whole speech-cache entries (the record, written after the WAV, is there) → (inode, mtime)."""
    found = {}
    for wav in (out / ".voxflow" / "tts-cache").glob("*/*.wav"):
        if wav.with_suffix(".json").exists():
            stat = wav.stat()
            found[wav] = (stat.st_ino, stat.st_mtime_ns)
    return found


def book_files(out: Path, stem: str) -> list[Path]:
    folder = out / "audiobooks" / stem
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def catalog_rows(out: Path) -> list[tuple[str, str, str]]:
    """(rel_path, status, run_id) of every narrations row, read back by DuckDB."""
    pattern = str(out / "catalog" / "narrations" / "*.parquet")
    if not list((out / "catalog" / "narrations").glob("*.parquet")):
        return []
    return duckdb.sql(f"select rel_path, status, run_id from read_parquet('{pattern}')").fetchall()


def vtt_words(path: Path) -> list[str]:
    return re.findall(r"\w+", " ".join(c.text for c in webvtt.read(str(path))))


def interrupt_mid_book(run: Run, out: Path, sig: signal.Signals) -> None:
    """Wait until the long book has a chunk cached but no MP3 yet, then stop the run as
    a terminal (Ctrl-C to the group, plus `uv run`'s forwarded copy) or systemd would."""
    wait_for(lambda: cached_chunks(out) and not list(out.glob("audiobooks/**/*.mp3")), "a chunk of the book", run)
    if sig == signal.SIGINT:
        os.killpg(run.proc.pid, sig)
        run.proc.send_signal(sig)
    else:
        run.proc.send_signal(sig)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_book_leaves_it_undone_and_a_rerun_finishes_from_the_cache(
    tmp_path: Path, sig: signal.Signals, prefect_api: str
) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    texts = make_corpus(source)
    shared = {"PREFECT_API_URL": prefect_api}
    run = Run(["narrate", str(source), "--out", str(out)], tmp_path / "run1", None if sig == signal.SIGINT else shared)
    try:
        interrupt_mid_book(run, out, sig)
        code = run.wait()
    finally:
        run.stop()
    assert code == 130, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    first = manifest(out)
    assert first["interrupted"] is True
    assert f"{LONG}.md" in first["left_undone"]
    assert first["counts"]["failed"] == 0 and first["counts"]["done"] < len(texts)
    assert not book_files(out, LONG)  # no partial MP3, VTT or report of the interrupted book
    assert all(rel != f"{LONG}.md" for rel, _status, _run in catalog_rows(out))  # and no catalog row
    assert not list(out.glob(".voxflow/work/*"))
    kept = cached_chunks(out)
    assert kept, "the chunks synthesised before the signal are cached"

    rerun = Run(["narrate", str(source), "--out", str(out)], tmp_path / "run2", shared)
    try:
        assert rerun.wait() == 0, rerun.stderr[-3000:]
    finally:
        rerun.stop()
    after = cached_chunks(out)
    assert {path: after.get(path) for path in kept} == kept  # reused as they were, not synthesised again
    assert len(after) > len(kept)
    second = manifest(out)
    assert second["interrupted"] is False and second["counts"]["failed"] == 0
    for stem, text in texts.items():
        words = vtt_words(out / "audiobooks" / stem / f"{stem}.vtt")
        expected = re.findall(r"\w+", text)
        assert words[-len(expected) :] == expected, stem  # the file's title is spoken first for a .txt
        assert list((out / "audiobooks" / stem).glob("*.mp3")), stem
    rows = catalog_rows(out)
    done_runs: dict[str, set[str]] = {}
    for rel, status, run_id in rows:
        assert status in ("done", "skipped"), (rel, status)
        if status == "done":
            done_runs.setdefault(rel, set()).add(run_id)
    assert sorted(done_runs) == sorted(
        f"{stem}.md" if stem == LONG else f"{stem}.txt" for stem in texts
    )  # every document done …
    assert all(len(runs) == 1 for runs in done_runs.values()), done_runs  # … by exactly one run


def test_a_second_ctrl_c_stops_a_narration_at_once(tmp_path: Path, prefect_api: str) -> None:
    """The first press lets the chunk in flight finish (long paragraphs: seconds of speech
    each); the second, meanwhile, ends the process before any summary or manifest."""
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    paragraphs = [" ".join(f"{PHRASES[(p + k) % len(PHRASES)]}." for k in range(25)) for p in range(4)]
    (source / "slow.md").write_text("# Slow\n\n" + "\n\n".join(paragraphs) + "\n")
    run = Run(["narrate", str(source), "--out", str(out)], tmp_path / "run1", {"PREFECT_API_URL": prefect_api})
    try:
        interrupt_mid_book(run, out, signal.SIGINT)
        wait_for(lambda: "stopping" in run.stderr, "the first Ctrl-C", run)
        time.sleep(0.4)  # a second, deliberate press (copies of one press arrive within milliseconds)
        os.killpg(run.proc.pid, signal.SIGINT)
        code = run.proc.wait(timeout=30)  # a guard against a hang, not a timing claim
    finally:
        run.stop()
    assert code == 130
    assert "Traceback" not in run.stderr
    assert not list(out.glob("runs/*.json"))  # it stopped before the summary of the first press
    assert not list(out.glob("audiobooks/**/*.mp3"))


class StoppingSynth(Synthesizer):
    """Answers after a random pause; asks the run to stop when its ``stop_at``-th call ends
    (in the event loop, as a signal handler would between two awaits). Records every start
    and whether the stop had been asked by then."""

    model = "local/tone-test"
    max_input_chars = 2000

    def __init__(self, rng: random.Random, stop_at: int | None, *, gated: bool = False) -> None:
        self.rng, self.stop_at, self.gated = rng, stop_at, gated
        self.limiter: RequestLimiter | None = None
        self.started: list[tuple[str, bool]] = []

    def use_limiter(self, limiter: RequestLimiter) -> bool:
        """Gated like the OpenRouter engine (a slot per request, held by the engine) or not."""
        self.limiter = limiter
        return self.gated

    async def synthesise(self, text: str, options: SynthesisOptions) -> SpeechAudio:
        assert self.limiter is not None
        async with self.limiter.slot() if self.gated else contextlib.nullcontext():
            self.started.append((text, interrupts.requested()))  # the request goes out
            await asyncio.sleep(self.rng.random() / 1000)
        if len(self.started) == self.stop_at:
            interrupts.request()
        return SpeechAudio(tone_pcm(text, ms_per_char=0.2), RATE)


def body_chunk(n: int) -> TextChunk:
    text = f"Sentence number {n} of the book."
    return TextChunk(0, n, "body", text, text, (text,), (len(text),))


def test_no_chunk_starts_after_a_stop_and_every_started_one_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seeded loop of stop requests at random points of a book synthesised 1–6 chunks at a
    time, by an engine that holds its own request slots or not: no synthesis starts once the
    stop is asked; each started chunk is in the cache; the book raises Interrupted exactly
    when chunks are missing; a second pass synthesises only those."""
    rng = random.Random(11)
    options = SynthesisOptions(model=StoppingSynth.model)
    for iteration in range(150):
        monkeypatch.setattr(interrupts, "_stop", threading.Event())
        chunks = [body_chunk(n) for n in range(rng.randint(1, 24))]
        cache = ChunkCache(tmp_path / f"cache-{iteration}")
        synth = StoppingSynth(rng, rng.randint(1, len(chunks) + 1), gated=rng.random() < 0.5)
        speaking = synthesise_chunks(chunks, synth, options, cache, RequestLimiter(rng.randint(1, 6)), Budget(None))
        try:
            audio, _stats = asyncio.run(speaking)
        except interrupts.Interrupted:
            audio = None
        assert not [text for text, stopping in synth.started if stopping], iteration
        started = {text for text, _ in synth.started}
        cached = {c.spoken for c in chunks if cache.get(c.cache_key(options.digest()), c.spoken) is not None}
        assert cached == started, iteration
        assert (audio is None) == (len(started) < len(chunks)), iteration

        monkeypatch.setattr(interrupts, "_stop", threading.Event())
        again = StoppingSynth(rng, None)
        audio, _stats = asyncio.run(synthesise_chunks(chunks, again, options, cache, RequestLimiter(4), Budget(None)))
        assert len(audio) == len(chunks)
        assert sorted(text for text, _ in again.started) == sorted({c.spoken for c in chunks} - started), iteration
