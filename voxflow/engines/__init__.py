"""Speech engines behind one seam (a base class per direction); see :mod:`voxflow.engines.base`."""

from voxflow.engines.base import (
    Engine,
    SynthesisOptions,
    Synthesizer,
    TranscribeOptions,
    Transcriber,
    get_synthesizer,
    get_transcriber,
    is_local,
)

__all__ = [
    "Engine",
    "SynthesisOptions",
    "Synthesizer",
    "TranscribeOptions",
    "Transcriber",
    "get_synthesizer",
    "get_transcriber",
    "is_local",
]
