"""Transcription benchmark (embedded engine), one command: `uv run python benchmarks/bench_transcribe.py`.

Prints, measured side by side in one run:
  1. WER and real-time factor of local/tiny.en per sample clip with an exact reference;
  2. wall time of a first CLI run over sample_data/recordings vs a no-op rerun (ratio);
  3. preparing a 1-hour recording: voxflow's streaming pass vs plain ffmpeg (time ratio) and
     vs pydub.AudioSegment.from_file (peak memory ratio).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_data" / "recordings"
sys.path.insert(0, str(ROOT))


def words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def bench_wer() -> None:
    import jiwer

    from voxflow import media
    from voxflow.engines.base import TranscribeOptions
    from voxflow.engines.local import LocalTranscriber
    from voxflow.models import AudioChunk, Span

    refs = json.loads((SAMPLES / "transcripts.json").read_text())
    engine = LocalTranscriber("local/tiny.en", threads=2)
    t0 = time.perf_counter()
    engine.load()
    print(f"model load: {time.perf_counter() - t0:.2f} s")
    print(f"{'clip':<22}{'dur s':>7}{'WER':>7}{'RTF':>7}")
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, ref in refs.items():
            if not ref["text"] or ref.get("approximate"):
                continue
            prepared = media.prepare_audio(str(SAMPLES / name), f"{tmp}/a.wav")
            pcm = media.read_pcm(prepared.wav_path, Span(0, prepared.duration_ms))
            chunk = AudioChunk(0, 0, prepared.duration_ms, pcm, "pcm")
            t0 = time.perf_counter()
            result = asyncio.run(engine.transcribe(chunk, TranscribeOptions("local/tiny.en")))
            rtf = (time.perf_counter() - t0) / (prepared.duration_ms / 1000)
            wer = jiwer.wer(words(ref["text"]), words(result.text))
            errors.append(wer)
            print(f"{name:<22}{prepared.duration_ms / 1000:>7.1f}{wer:>7.3f}{rtf:>7.3f}")
    print(f"mean WER over {len(errors)} clips: {sum(errors) / len(errors):.3f}")


def timed_cli(out: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        ["uv", "run", "voxflow", "transcribe", str(SAMPLES), "--out", out],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - t0


def bench_noop() -> None:
    with tempfile.TemporaryDirectory() as out:
        first = timed_cli(out)
        second = timed_cli(out)
    print(f"CLI first run: {first:.1f} s   no-op rerun: {second:.2f} s   ratio {second / first:.3f}")


CHILD = """
import resource, sys, time
t0 = time.perf_counter()
mode, src, dst = sys.argv[1:4]
if mode == "voxflow":
    from voxflow import media
    media.prepare_audio(src, dst)
elif mode == "ffmpeg":
    import subprocess
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", src, "-ar", "16000", "-ac", "1", dst], check=True)
else:
    from pydub import AudioSegment
    AudioSegment.from_file(src).set_frame_rate(16000).set_channels(1).export(dst, format="wav")
status = open("/proc/self/status").read()
own = int(status.split("VmHWM:")[1].split()[0]) / 1024  # peak RSS of this process since exec
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{time.perf_counter() - t0:.2f} {own:.0f} {kids:.0f}")
"""


def bench_memory() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hour = f"{tmp}/hour.mp3"
        subprocess.run(
            [
                "ffmpeg",
                "-v",
                "error",
                "-stream_loop",
                "326",
                "-i",
                str(SAMPLES / "jfk.flac"),
                "-c:a",
                "libmp3lame",
                "-b:a",
                "64k",
                hour,
            ],
            check=True,
        )
        rows = {}
        for mode in ("ffmpeg", "voxflow", "pydub"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, mode, hour, f"{tmp}/{mode}.wav"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            rows[mode] = [float(x) for x in out.stdout.split()]
            wall, own, kids = rows[mode]
            print(f"1 h MP3 → 16 kHz WAV  {mode:<8} {wall:6.2f} s   python {own:6.0f} MB   ffmpeg {kids:5.0f} MB")
        v, f, p = rows["voxflow"], rows["ffmpeg"], rows["pydub"]
        print(
            f"voxflow/plain-ffmpeg time ratio: {v[0] / f[0]:.2f}   "
            f"pydub/voxflow peak-memory ratio: {p[1] / max(v[1], v[2]):.1f}x"
        )


if __name__ == "__main__":
    bench_memory()  # first, while this process is small (children inherit nothing big)
    bench_wer()
    bench_noop()
