"""Process-wide singletons are built once however many threads ask at once (docs/concurrency.md)."""

from __future__ import annotations

import sys
import threading
import time
import types

import pytest

from voxflow.engines.local import LocalSynthesizer
from voxflow.engines.whisper import Whisper


class SlowModel:
    """Stands in for a model class: slow to build, counts how often it is built."""

    built = 0
    lock = threading.Lock()

    def __init__(self, *args: object, **kwargs: object) -> None:
        time.sleep(0.05)  # long enough for every thread to arrive while the first one loads
        with SlowModel.lock:
            SlowModel.built += 1

    @classmethod
    def load(cls, *args: object, **kwargs: object) -> SlowModel:
        return cls()


def _load_from_threads(load, n: int = 8) -> list[object]:
    start = threading.Barrier(n)
    got: list[object] = []

    def worker() -> None:
        start.wait()
        got.append(load())

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return got


@pytest.mark.parametrize("kind", ["transcriber", "synthesizer"])
def test_a_local_model_is_loaded_once_when_eight_threads_ask_at_once(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    for _ in range(20):
        SlowModel.built = 0
        if kind == "transcriber":
            monkeypatch.setitem(sys.modules, "faster_whisper", types.SimpleNamespace(WhisperModel=SlowModel))
            monkeypatch.setattr("voxflow.engines.whisper.resolve_stt_model", lambda model: "fake")
            engine = Whisper("local/tiny.en")
        else:
            monkeypatch.setitem(sys.modules, "piper", types.SimpleNamespace(PiperVoice=SlowModel))
            monkeypatch.setattr("voxflow.engines.local.resolve_voice", lambda model: ("a.onnx", "a.json"))
            engine = LocalSynthesizer("local/joe")
        got = _load_from_threads(engine.load)
        assert len(got) == 8 and len({id(m) for m in got}) == 1
        assert SlowModel.built == 1
