"""Subtitles: cue shaping (``cues``) once, then one writer per sidecar format (``writers``)."""

from voxflow.subtitles.cues import shape_cues, wrap_lines
from voxflow.subtitles.writers import (
    WRITERS,
    JSONWriter,
    SidecarDoc,
    SRTWriter,
    SubtitleWriter,
    TXTWriter,
    VTTWriter,
    get_writer,
    render_sidecars,
    sidecar_name,
)

__all__ = [
    "WRITERS",
    "JSONWriter",
    "SRTWriter",
    "SidecarDoc",
    "SubtitleWriter",
    "TXTWriter",
    "VTTWriter",
    "get_writer",
    "render_sidecars",
    "shape_cues",
    "sidecar_name",
    "wrap_lines",
]
