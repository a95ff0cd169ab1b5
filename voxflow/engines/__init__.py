"""Speech engines behind two small protocols; see :mod:`voxflow.engines.base`."""

from voxflow.engines.base import (
    SynthesisOptions,
    Synthesizer,
    TranscribeOptions,
    Transcriber,
    get_synthesizer,
    get_transcriber,
    is_local,
)

__all__ = [
    "SynthesisOptions",
    "Synthesizer",
    "TranscribeOptions",
    "Transcriber",
    "get_synthesizer",
    "get_transcriber",
    "is_local",
]
