"""`voxflow …` with a log of the length of every array faster-whisper is given: tests and
benchmarks run the CLI as ``python tests/cli_with_engine_log.py ARGS`` with ``ENGINE_INPUT_LOG``
set. Whisper runs in the engine process, which multiprocessing's ``spawn`` starts by importing
this file as ``__mp_main__``: that is where faster-whisper is wrapped (the CLI process itself
never imports it)."""

from __future__ import annotations

import os
import sys


def _log_engine_inputs() -> None:
    import faster_whisper

    original = faster_whisper.WhisperModel.transcribe

    def logged(self: object, audio: object, *args: object, **kwargs: object) -> object:
        with open(os.environ["ENGINE_INPUT_LOG"], "a") as log:
            log.write(f"{len(audio) / 16000:.3f}\n")  # type: ignore[arg-type]
        return original(self, audio, *args, **kwargs)

    faster_whisper.WhisperModel.transcribe = logged


if __name__ == "__mp_main__":
    _log_engine_inputs()
elif __name__ == "__main__":
    from voxflow.cli import main

    sys.argv = ["voxflow", *sys.argv[1:]]
    main()
