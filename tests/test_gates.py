"""Hallucination gates: invented loops and impossible reading rates never reach the outputs,
on any machine; real speech is never refused. Outputs read back with srt and DuckDB."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import jiwer
import srt

from tests.conftest import ffprobe_seconds, normal_words, reference_texts
from voxflow.engines.base import TranscribeOptions, Transcriber
from voxflow.gates import gate_reason, gate_segments
from voxflow.models import AudioChunk, Segment, Transcript, Word
from voxflow.settings import load_settings
from voxflow.transcribe import finish_run, open_run, plan_run, record_outcome, transcribe_recording

# What tiny.en made of sample_data/recordings/spk1_snt1.wav (2.9 s) under OpenBLAS's Haswell
# kernel: the sentence, then this in a 60 ms segment at the very end (issue 16).
LOOP = "Thank you very much for watching, I'll see you in the next video" + (", see you in the next video" * 30)


def test_the_loop_tiny_en_invented_is_refused() -> None:
    assert gate_reason(Segment(2_780, 2_840, LOOP)) == "loop"
    assert gate_reason(Segment(0, 30_000, LOOP)) == "loop", "a loop is refused at any rate"
    three = "see you in the next video, " * 4
    assert gate_reason(Segment(0, 10_000, three)) == "loop"


def test_text_in_no_time_is_refused() -> None:
    assert gate_reason(Segment(2_780, 2_780, "Thank you.")) == "impossible-rate"
    assert gate_reason(Segment(1_000, 1_060, "Thank you very much.")) == "impossible-rate"


def test_real_speech_is_never_refused(samples: Path) -> None:
    """Each sample clip's reference text over the clip's own duration (ffprobe) passes, and so
    does the fastest plausible reading of it (the clip's speech in a third of its time)."""
    for name, text in reference_texts().items():
        ms = round(ffprobe_seconds(samples / name) * 1000)
        assert gate_reason(Segment(0, ms, text)) is None, name
        assert gate_reason(Segment(0, ms // 3, text)) is None, name


def test_gate_counts_what_it_drops() -> None:
    kept = Segment(0, 2_780, "The child almost hurt the small dog.")
    gated = gate_segments([kept, Segment(2_780, 2_840, LOOP), Segment(2_840, 2_840, "Bye.")])
    assert gated.kept == (kept,)
    assert gated.dropped == {"loop": 1, "impossible-rate": 1}
    assert 0 < gated.max_chars_per_s < 20


class LoopingEngine(Transcriber):
    """An engine that answers like tiny.en did on spk1_snt1.wav, on every machine."""

    upload_format = "pcm"
    max_chunk_s = 30.0
    model = "local/looping"

    async def transcribe(self, chunk: AudioChunk, options: TranscribeOptions) -> Transcript:
        end = chunk.duration_ms
        said = "The child almost hurt the small dog."
        step = (end - 200) // len(said.split())
        words = tuple(Word(i * step, (i + 1) * step, w) for i, w in enumerate(said.split()))
        segments = (
            Segment(0, words[-1].end_ms, said, words),
            Segment(end - 60, end, LOOP, (Word(end - 60, end - 60, "Thank"),)),
            Segment(end, end, "Thank you.", (Word(end, end, "Thank"), Word(end, end, "you."))),
        )
        return Transcript(f"{said} {LOOP} Thank you.", "en", segments)


def test_invented_segments_never_reach_the_outputs(samples: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(samples / "spk1_snt1.wav", src / "spk1_snt1.wav")
    plan = plan_run(str(src), load_settings(out=str(out)))
    ctx = open_run(plan, engine=LoopingEngine())
    results = [record_outcome(ctx, transcribe_recording(rec, ctx.spec)) for rec in plan.todo]
    assert finish_run(ctx, results).exit_code == 0
    row = (
        duckdb.connect()
        .execute(
            "select text, warnings, qa_segments_dropped, qa_speech_s, qa_detected_speech_s, duration_s"
            f" from read_parquet('{out}/catalog/transcripts/*.parquet')"
        )
        .fetchone()
    )
    assert normal_words(row[0]) == "the child almost hurt the small dog"
    assert any("hallucination" in w for w in row[1]), row[1]
    assert row[2] == 2, "both invented segments are counted"
    assert 0 < row[3] <= row[5] and 0 < row[4] <= row[5]
    cues = list(srt.parse((out / "spk1_snt1.en.srt").read_text(), ignore_errors=False))
    assert cues and all(c.end > c.start for c in cues)
    assert "watching" not in json.loads((out / "spk1_snt1.en.json").read_text())["text"]


def test_bundled_clip_is_transcribed_without_invented_text(samples: Path, tmp_path: Path) -> None:
    """The clip that looped under one OpenBLAS kernel, through the real embedded engine."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    shutil.copy(samples / "spk1_snt1.wav", src / "spk1_snt1.wav")
    from voxflow.transcribe import run_inline

    assert run_inline(plan_run(str(src), load_settings(out=str(out)))).exit_code == 0
    text = (
        duckdb.connect().execute(f"select text from read_parquet('{out}/catalog/transcripts/*.parquet')").fetchone()[0]
    )
    reference = reference_texts()["spk1_snt1.wav"]
    assert jiwer.wer(normal_words(reference), normal_words(text)) <= 0.2, text
    cues = list(srt.parse((out / "spk1_snt1.en.srt").read_text(), ignore_errors=False))
    duration = ffprobe_seconds(src / "spk1_snt1.wav")
    for cue in cues:
        assert (cue.end - cue.start).total_seconds() >= min(1.0, duration - 0.01), cue
