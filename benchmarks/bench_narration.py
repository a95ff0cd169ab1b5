"""Narration benchmarks, one command:

    uv run python benchmarks/bench_narration.py [--skip-emulator] [--latency-ms 1000] [--concurrency 16]

Printed, side by side from one run:
  * the embedded synthesiser (Piper, en_US-joe-medium) on the sample texts: audio seconds,
    synthesis wall, real-time factor (wall / audio) and characters per second, per book;
  * assembly (mastering, encoding, tags) wall per book, and each MP3's loudness as ffmpeg
    measures it on the encoded file (RMS, peak, noise floor, LUFS) with the ACX verdict;
  * round trip: every finished MP3 transcribed by the embedded Whisper (LocalTranscriber)
    and compared with what its read-along VTT says was spoken — word error rate per book
    (jiwer; lower-cased, punctuation stripped, numerals written as words on both sides);
  * synthesis fan-out against the OpenRouter emulator at a fixed latency: a book of ≥ 100
    chunks at ``--concurrency``, wall against the physical limit (chunks × latency /
    concurrency); target ≤ 1.25.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
import time
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voxflow import media  # noqa: E402
from voxflow.engines.base import SpeechAudio, SynthesisOptions, TranscribeOptions  # noqa: E402
from voxflow.limits import Budget, RequestLimiter  # noqa: E402
from voxflow.models import AudioChunk  # noqa: E402
from voxflow.narrate import ChunkCache, plan_narration, run_inline, scan_documents, synthesise_chunks  # noqa: E402
from voxflow.narrate.assembly.chunks import ChunkAudio  # noqa: E402
from voxflow.narrate.prepare import prepare_document  # noqa: E402
from voxflow.narrate.read import read_document  # noqa: E402
from voxflow.narrate.words import number_words  # noqa: E402
from voxflow.settings import OpenRouterSettings, Settings  # noqa: E402

TEXTS = ROOT / "sample_data" / "texts"
VOICE = "local/en_US-joe-medium"
STT = "local/tiny.en"


def normalise(text: str) -> str:
    """Lower case, numerals as words, punctuation (apostrophes and hyphens too) gone."""
    text = re.sub(r"\d+", lambda m: f" {number_words(int(m.group(0)))} " if len(m.group(0)) < 6 else m.group(0), text)
    text = re.sub(r"[^a-z0-9\s]", " ", text.lower().replace("'", "").replace("’", ""))
    return " ".join(text.split())


def vtt_text(path: Path) -> str:
    import webvtt

    return " ".join(c.text.replace("\n", " ") for c in webvtt.read(str(path)))


def transcribe_file(mp3: Path, work: Path) -> str:
    from voxflow.engines.local import LocalTranscriber

    engine = LocalTranscriber(STT, threads=2)
    wav = work / (mp3.stem + ".wav")
    prepared = media.prepare_audio(str(mp3), str(wav))
    words = []
    for span in media.plan_chunks(prepared.duration_ms, prepared.silences, 600_000):
        pcm = media.read_pcm(str(wav), span)
        chunk = AudioChunk(0, span.start_ms, span.duration_ms, pcm, "pcm")
        words.append(asyncio.run(engine.transcribe(chunk, TranscribeOptions(model=STT))).text)
    wav.unlink(missing_ok=True)
    return " ".join(words)


def embedded(work: Path) -> None:
    import jiwer

    from voxflow.engines.local import LocalSynthesizer

    synth = LocalSynthesizer.shared(VOICE)
    t0 = time.perf_counter()
    synth.load()
    print(f"Piper voice load: {time.perf_counter() - t0:.2f} s")
    out = work / "out"
    settings = Settings(out=str(out), model=VOICE, concurrency=2)
    options = SynthesisOptions(model=VOICE)
    cache = ChunkCache(out / ".voxflow" / "tts-cache")
    print("\n== embedded synthesiser (real-time factor = synthesis wall / audio) ==")
    print(f"{'book':34} {'chars':>6} {'audio s':>8} {'wall s':>7} {'RTF':>6} {'chars/s':>8}")
    total_audio = total_wall = 0.0
    for ref in scan_documents(str(TEXTS))[0]:
        doc = Path(ref.uri)
        prepared = prepare_document(read_document(str(doc)), max_chars=synth.max_input_chars, phonemes=True)
        chunks = list(prepared.chunks())
        started = time.perf_counter()
        audio, _stats = asyncio.run(
            synthesise_chunks(chunks, synth, options, cache, RequestLimiter(2), Budget(None), label=doc.name)
        )
        wall = time.perf_counter() - started
        seconds = sum(a.duration_ms for a in audio.values()) / 1000
        chars = sum(len(c.spoken) for c in chunks)
        total_audio, total_wall = total_audio + seconds, total_wall + wall
        print(f"{doc.name:34} {chars:6d} {seconds:8.1f} {wall:7.1f} {wall / seconds:6.3f} {chars / wall:8.0f}")
    print(f"{'all':34} {'':6} {total_audio:8.1f} {total_wall:7.1f} {total_wall / total_audio:6.3f}")

    print("\n== assembly and mastering (chunks from the cache) ==")
    started = time.perf_counter()
    summary = run_inline(plan_narration(str(TEXTS), settings))
    print(f"{summary.done} books, {summary.chapters} chapter files, assembled in {time.perf_counter() - started:.1f} s")
    import json

    print(f"{'file':58} {'RMS':>6} {'peak':>6} {'floor':>6} {'LUFS':>6}  ACX")
    for report in sorted(out.rglob("*.report.json")):
        for m in json.loads(report.read_text())["mastering"]:
            lv = m["levels"]
            verdict = "pass" if m["passed"] else "FAIL"
            print(
                f"{m['file'][:58]:58} {lv['rms_db']:6.1f} {lv['peak_db']:6.1f} "
                f"{lv['floor_db']:6.1f} {lv['lufs']:6.1f}  {verdict}"
            )

    print("\n== round trip: finished MP3 → embedded Whisper vs the read-along VTT ==")
    print(f"{'book':28} {'words':>6} {'WER':>6}")
    for folder in sorted((out / "audiobooks").iterdir()):
        refs, hyps = [], []
        for mp3 in sorted(folder.glob("*.mp3")):
            refs.append(normalise(vtt_text(mp3.with_suffix(".vtt"))))
            hyps.append(normalise(transcribe_file(mp3, work)))
        ref, hyp = " ".join(refs), " ".join(hyps)
        print(f"{folder.name:28} {len(ref.split()):6d} {jiwer.wer(ref, hyp):6.3f}")


def fanout(latency_ms: int, concurrency: int, chunks: int) -> None:
    from voxflow.engines.openrouter import OpenRouterSynthesizer
    from voxflow.testing.emulator import EmulatorConfig, start_emulator_in_thread

    print(f"\n== synthesis fan-out against the emulator ({latency_ms} ms latency, concurrency {concurrency}) ==")
    print("(the emulator speaks with a tone voice here: its own Piper would be the bottleneck, not voxflow)")
    from voxflow.engines.local import LocalSynthesizer

    LocalSynthesizer._instances[TONE_VOICE] = _ToneVoice()  # type: ignore[assignment]
    handle = start_emulator_in_thread(EmulatorConfig(latency_ms=latency_ms, tts_engine=TONE_VOICE))
    work = Path(tempfile.mkdtemp(prefix="voxflow-bench-"))
    try:
        settings = Settings(out=str(work / "out"), concurrency=concurrency, max_attempts=3)
        settings.__dict__["openrouter"] = OpenRouterSettings(api_key=handle.key, base_url=handle.url)
        model = "openai/gpt-4o-mini-tts-2025-12-15"
        synth = OpenRouterSynthesizer(model, settings, voice="alloy")
        from voxflow.narrate.document import Chapter, Document

        paragraphs = tuple(f"Line {n}." for n in range(1, chunks + 1))
        doc = Document("mem://bench", "md", "Bench", None, (Chapter(0, "Bench", paragraphs),))
        body = [c for c in prepare_document(doc, max_chars=4096, latin_only=False).chunks() if c.kind == "body"]
        cache = ChunkCache(work / "cache")
        options = SynthesisOptions(model=model, voice="alloy")
        limiter = RequestLimiter(concurrency)
        started = time.perf_counter()
        audio, stats = asyncio.run(synthesise_chunks(body, synth, options, cache, limiter, Budget(None)))
        wall = time.perf_counter() - started
        limit = len(body) * latency_ms / 1000 / concurrency
        assert len(audio) == len(body) and stats.synthesised == len(body)
        print(f"{len(body)} chunks: wall {wall:.2f} s, physical limit {limit:.2f} s, ratio {wall / limit:.2f} "
              f"(target ≤ 1.25); peak in flight {limiter.peak_in_flight}; cost ${stats.cost_usd:.4f}")  # fmt: skip
        _check_wav(next(iter(audio.values())))
    finally:
        handle.stop()
        shutil.rmtree(work, ignore_errors=True)


TONE_VOICE = "local/bench-tone"


class _ToneVoice:
    """A voice for the emulator that costs no CPU: 60 ms of tone per character."""

    model = TONE_VOICE

    def synthesise_sync(self, text: str, options: SynthesisOptions) -> SpeechAudio:
        import numpy as np

        n = 22_050 * max(1, len(text)) * 60 // 1000
        tone = (np.sin(np.arange(n) * 2 * np.pi * 200 / 22_050) * 8000).astype(np.int16)
        return SpeechAudio(tone.tobytes(), 22_050)


def _check_wav(audio: ChunkAudio) -> None:
    with wave.open(audio.path, "rb") as wav:
        assert wav.getnframes() > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-emulator", action="store_true")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--latency-ms", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--chunks", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="voxflow-bench-") as tmp:
        if not args.skip_embedded:
            embedded(Path(tmp))
        if not args.skip_emulator:
            fanout(args.latency_ms, args.concurrency, args.chunks)


if __name__ == "__main__":
    main()
