"""Memory stays flat with recording length: the embedded engine only ever sees bounded pieces.

Real speech (the sample clips looped with pauses) is transcribed by the real CLI in fresh
processes; peak RSS comes from ``os.wait4`` of the child, the pieces from a log of every array
faster-whisper is given, the accuracy from jiwer against the clips' references.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.realspeech import CONTINUOUS_CLIPS, CliOutcome, make_recording, run_cli, word_error_rate

LONGEST_ENGINE_INPUT_S = 30.0  # Whisper's own window: no piece the engine sees is longer
GROWTH_LIMIT = 1.25  # peak RSS of a 5-minute run ÷ that of a 1-minute run
MAX_WER = 0.05  # the clips alone transcribe at WER 0.00–0.01 with tiny.en
PROCESS_LIMIT_MB = 500  # no process of a run peaks higher (issue 11)


def _transcribe(tmp: Path, minutes: float) -> tuple[CliOutcome, str, Path]:
    source = tmp / f"in-{minutes:g}"
    source.mkdir()
    reference = make_recording(source / "meeting.flac", minutes)
    out = tmp / f"out-{minutes:g}"
    env = {**os.environ, "VOXFLOW_LOCAL_THREADS": "1"}
    env.pop("OPENROUTER_API_KEY", None)
    outcome = run_cli(source, out, env)
    assert outcome.exit_code == 0, outcome.stderr[-2000:]
    print(f"{minutes:g} min: peak RSS {outcome.maxrss_mb:.0f} MB, longest piece {max(outcome.engine_inputs_s):.1f} s")
    return outcome, reference, out


@pytest.fixture(scope="module")
def short_and_long(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[CliOutcome, str, Path]]:
    tmp = tmp_path_factory.mktemp("memory")
    return {"1 min": _transcribe(tmp, 1), "5 min": _transcribe(tmp, 5)}


@pytest.mark.timeout(900)
def test_engine_never_sees_more_than_30_seconds(short_and_long: dict) -> None:
    for label, (outcome, _, _) in short_and_long.items():
        assert outcome.engine_inputs_s, f"{label}: faster-whisper was never called"
        assert max(outcome.engine_inputs_s) <= LONGEST_ENGINE_INPUT_S, (label, outcome.engine_inputs_s)


@pytest.mark.timeout(900)
def test_peak_memory_does_not_grow_with_length(short_and_long: dict) -> None:
    short, long = short_and_long["1 min"][0], short_and_long["5 min"][0]
    assert long.maxrss_mb <= GROWTH_LIMIT * short.maxrss_mb, (short.maxrss_mb, long.maxrss_mb)


@pytest.mark.timeout(900)
def test_no_process_of_the_run_peaks_over_500_mb(short_and_long: dict) -> None:
    """wait4's ru_maxrss of the CLI is the largest peak of the CLI and every descendant it
    waited for: the engine process, ffmpeg, Prefect's temporary server."""
    for label, (outcome, _, _) in short_and_long.items():
        assert outcome.maxrss_mb <= PROCESS_LIMIT_MB, (label, outcome.maxrss_mb)


@pytest.mark.timeout(900)
def test_bounded_pieces_keep_accuracy(short_and_long: dict) -> None:
    for label, (_, reference, out) in short_and_long.items():
        assert word_error_rate(out, reference) <= MAX_WER, label


@pytest.mark.timeout(900)
def test_continuous_speech_in_two_languages_stays_under_500_mb(tmp_path: Path) -> None:
    """The engine's worst case: no pauses (every piece a full 30 s window) and German in every
    pass (Whisper base loaded beside tiny.en, and decoding it again hotter), default settings."""
    source = tmp_path / "in"
    source.mkdir()
    make_recording(source / "talk.flac", 3, CONTINUOUS_CLIPS, pause_s=0.0)
    env = dict(os.environ)
    env.pop("OPENROUTER_API_KEY", None)
    outcome = run_cli(source, tmp_path / "out", env)
    assert outcome.exit_code == 0, outcome.stderr[-2000:]
    assert outcome.maxrss_mb <= PROCESS_LIMIT_MB, outcome.maxrss_mb
