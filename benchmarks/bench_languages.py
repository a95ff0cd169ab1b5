"""Offline languages benchmark: `uv run python benchmarks/bench_languages.py`.

Prints, measured side by side in one run on the same 16 kHz audio:
  1. word error rate per English clip and real-time factor for local/tiny.en, local/base and
     local/auto through voxflow's engine, and bare faster-whisper running the same model files
     (int8, 2 threads, VAD, beam 5, language left to Whisper);
  2. on real speech that switches language (sample multilingual.mp3: English then German, and
     the same halves swapped): the seconds of text per detected language, voxflow local/auto
     against bare faster-whisper with base;
  3. on a recording that switches every few seconds (German sentences and English clips in
     turn, tests/realspeech.py): how many of its 10 stretches have words in their own language
     (py3langid), the real ``voxflow transcribe`` command (defaults; its RTF is the whole
     process's, start-up included) against bare faster-whisper base, as is and with its
     ``multilingual=True`` (a language per segment).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_data" / "recordings"
sys.path.insert(0, str(ROOT))
MODELS = ("local/tiny.en", "local/base", "local/auto")


def words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def to_wav(source: Path, wav: Path, audio_filter: str | None = None) -> None:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), "-ac", "1", "-ar", "16000"]
    subprocess.run([*cmd, *(["-af", audio_filter] if audio_filter else []), str(wav)], check=True)


def read_samples(wav: Path):
    from faster_whisper import decode_audio

    return decode_audio(str(wav), sampling_rate=16_000)


def voxflow_transcript(model: str, samples):
    from voxflow.engines.base import TranscribeOptions
    from voxflow.engines.local import LocalTranscriber
    from voxflow.models import AudioChunk

    pcm = (samples * 32767).astype("<i2").tobytes()
    engine = LocalTranscriber(model, threads=2)
    chunk = AudioChunk(0, 0, round(len(samples) / 16), pcm, "pcm")
    return asyncio.run(engine.transcribe(chunk, TranscribeOptions(model)))


def bare_segments(model: str, samples) -> tuple[list, str]:
    from faster_whisper import WhisperModel

    from voxflow.engines.whisper import resolve_stt_model

    whisper = bare_model(model, WhisperModel, resolve_stt_model)
    segments, info = whisper.transcribe(samples, vad_filter=True, beam_size=5)
    return list(segments), info.language


_BARE: dict[str, object] = {}


def bare_model(model, whisper_model, resolve):
    if model not in _BARE:
        _BARE[model] = whisper_model(resolve(model), device="cpu", compute_type="int8", cpu_threads=2)
    return _BARE[model]


def bench_english(tmp: Path) -> None:
    import jiwer

    refs = {k: v for k, v in json.loads((SAMPLES / "transcripts.json").read_text()).items() if v["text"]}
    clips = {}
    for name in refs:
        to_wav(SAMPLES / name, tmp / f"{name}.wav")
        clips[name] = read_samples(tmp / f"{name}.wav")
    for model in MODELS:  # load once, outside the timings
        voxflow_transcript(model, clips["jfk.flac"])
        bare_segments(model.replace("auto", "base"), clips["jfk.flac"])
    print("1. English clips: WER (voxflow | bare faster-whisper), RTF of each")
    print(f"{'clip':<16}" + "".join(f"{m.removeprefix('local/'):>22}" for m in MODELS))
    totals: dict[str, list[float]] = {m: [0.0, 0.0, 0.0, 0.0] for m in MODELS}  # wer v, wer b, time v, time b
    audio_s = 0.0
    for name, samples in clips.items():
        audio_s += len(samples) / 16_000
        row = f"{name:<16}"
        for model in MODELS:
            t0 = time.perf_counter()
            ours = voxflow_transcript(model, samples).text
            t1 = time.perf_counter()
            theirs = " ".join(s.text for s in bare_segments(model.replace("auto", "base"), samples)[0])
            t2 = time.perf_counter()
            wv, wb = (
                jiwer.wer(words(refs[name]["text"]), words(ours)),
                jiwer.wer(words(refs[name]["text"]), words(theirs)),
            )
            totals[model] = [a + b for a, b in zip(totals[model], (wv, wb, t1 - t0, t2 - t1), strict=True)]
            row += f"{wv:>11.3f} | {wb:<8.3f}"
        print(row)
    n = len(clips)
    print(f"{'mean WER':<16}" + "".join(f"{t[0] / n:>11.3f} | {t[1] / n:<8.3f}" for t in totals.values()))
    print(f"{'RTF':<16}" + "".join(f"{t[2] / audio_s:>11.3f} | {t[3] / audio_s:<8.3f}" for t in totals.values()))
    print("(local/auto's bare column is faster-whisper with base: bare has no per-window routing)")


def language_seconds(segments) -> Counter:
    return Counter({k: round(v, 1) for k, v in segments.items()})


def bench_switching(tmp: Path) -> None:
    source = SAMPLES / "multilingual.mp3"
    to_wav(source, tmp / "en-de.wav")
    to_wav(
        source,
        tmp / "de-en.wav",
        "asplit[a][b];[a]atrim=30,asetpts=N/SR/TB[g];[b]atrim=0:30,asetpts=N/SR/TB[e];[g][e]concat=v=0:a=1",
    )
    print("\n2. Language switching: seconds of text per language, and in order of time")
    for clip in ("en-de.wav", "de-en.wav"):
        samples = read_samples(tmp / clip)
        t0 = time.perf_counter()
        ours = voxflow_transcript("local/auto", samples)
        took = time.perf_counter() - t0
        rtf = took / (len(samples) / 16000)
        print(f"{clip}  voxflow local/auto: {dict(ours.languages)}  p={ours.language_probability}  RTF {rtf:.3f}")
        t0 = time.perf_counter()
        segments, language = bare_segments("local/base", samples)
        took = time.perf_counter() - t0
        spoken = sum(s.end - s.start for s in segments)
        print(
            f"{clip}  bare faster-whisper base: {{'{language}': {spoken:.1f}}}  RTF {took / (len(samples) / 16000):.3f}"
        )
        ours_halves = halves([(s.start_ms / 1000, s.end_ms / 1000, s.text) for s in ours.segments])
        bare_halves = halves([(s.start, s.end, s.text) for s in segments])
        print(f"   language of each half's text (py3langid): voxflow {ours_halves}, bare {bare_halves}")


def halves(segments: list[tuple[float, float, str]]) -> list[tuple[str, int]]:
    """(language of the text by py3langid, words) for the text before and after 30 s."""
    import py3langid

    texts = [" ".join(t for a, b, t in segments if b <= 31), " ".join(t for a, b, t in segments if a >= 29)]
    return [(py3langid.classify(t)[0] if t else "-", len(t.split())) for t in texts]


def bench_alternating(tmp: Path) -> None:
    from faster_whisper import WhisperModel

    from tests.realspeech import alternating_recording
    from voxflow.engines.whisper import resolve_stt_model

    spans = alternating_recording(tmp / "alternating.wav")
    samples = read_samples(tmp / "alternating.wav")
    audio_s = len(samples) / 16000
    print(f"\n3. Switching every few seconds ({len(spans)} stretches, {audio_s:.0f} s): stretches kept")
    whisper = bare_model("local/base", WhisperModel, resolve_stt_model)
    runs = {
        "voxflow transcribe (command)": lambda: cli_words(tmp / "alternating.wav"),
        "bare base": lambda: _words(whisper.transcribe(samples, vad_filter=True, beam_size=5, word_timestamps=True)),
        "bare base, multilingual=True": lambda: _words(
            whisper.transcribe(samples, vad_filter=True, beam_size=5, word_timestamps=True, multilingual=True)
        ),
    }  # fmt: skip
    for name, run in runs.items():
        t0 = time.perf_counter()
        words_at = run()
        took = time.perf_counter() - t0
        kept = [_kept(words_at, span) for span in spans]
        marks = " ".join(f"{lang}{'✓' if ok else '✗'}" for (_, _, lang), ok in zip(spans, kept, strict=True))
        print(f"{name:<30} {sum(kept):>2} of {len(spans)}   {marks}   RTF {took / audio_s:.3f}")


def cli_words(wav: Path) -> list[tuple[float, float, str]]:
    """The words of ``voxflow transcribe`` (defaults, a fresh process) on ``wav``, from its JSON sidecar."""
    source, out = wav.parent / "cli-in", wav.parent / "cli-out"
    source.mkdir(exist_ok=True)
    shutil.copy(wav, source / wav.name)
    cmd = ["uv", "run", "voxflow", "transcribe", str(source), "--out", str(out), "--formats", "json", "--force"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"voxflow failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    (sidecar,) = out.glob(f"{wav.stem}.*.json")
    segments = json.loads(sidecar.read_text(encoding="utf-8"))["segments"]
    return [(w["start"], w["end"], w["word"]) for s in segments for w in s["words"]]


def _words(transcribed) -> list[tuple[float, float, str]]:
    segments, _info = transcribed
    return [(w.start, w.end, w.word) for s in segments for w in s.words or []]


def _kept(words_at: list[tuple[float, float, str]], span: tuple[float, float, str]) -> bool:
    """At least 4 words whose middle falls in the stretch, and py3langid names their language."""
    import py3langid

    start, end, language = span
    said = " ".join(w for a, b, w in words_at if start - 0.3 <= (a + b) / 2 <= end + 0.3)
    return len(said.split()) >= 4 and py3langid.classify(said)[0] == language


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bench_english(Path(tmp))
        bench_switching(Path(tmp))
        bench_alternating(Path(tmp))


if __name__ == "__main__":
    main()
