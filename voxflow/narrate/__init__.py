"""Narration: documents → audiobooks, in plain Python (no Prefect); ``flows/narrate.py``
orchestrates it.

read/        bytes → :class:`~voxflow.narrate.document.Document` (plain text, Markdown, EPUB)
prepare      Document → chunks the engine can speak (cleaning, sentences, packing)
lexicon      pronunciation respellings applied to the spoken text
options      what a run may ask of the voice, checked before any work
corpus       scanning documents, each book's key, its lexicons
plan         the skip check per document, the dry-run estimate
synthesis    chunks → speech, concurrently, cached on disk
assembly/    chunk audio → mastered, tagged MP3 files (and an M4B) with a read-along VTT
job          one document's task, wherever it runs → its ``narrations`` rows
run          the run's spec and per-process resources; rows → catalog, manifest, exit code
"""

from voxflow.narrate.corpus import DocumentRef, scan_documents
from voxflow.narrate.job import narrate_document
from voxflow.narrate.options import NarrationOptions, parse_formats, synthesis_options
from voxflow.narrate.plan import NarrationPlan, plan_document, plan_narration
from voxflow.narrate.run import (
    NarrationSpec,
    NarrationSummary,
    document_workers,
    finish_narration,
    narrate,
    open_narration,
    record_abort,
    record_rows,
    run_inline,
)
from voxflow.narrate.synthesis import ChunkCache, synthesise_chunks

__all__ = [
    "ChunkCache",
    "DocumentRef",
    "NarrationOptions",
    "NarrationPlan",
    "NarrationSpec",
    "NarrationSummary",
    "document_workers",
    "finish_narration",
    "narrate",
    "narrate_document",
    "open_narration",
    "parse_formats",
    "plan_document",
    "plan_narration",
    "record_abort",
    "record_rows",
    "run_inline",
    "scan_documents",
    "synthesis_options",
    "synthesise_chunks",
]
