"""Narration: documents → audiobooks.

read/        bytes → :class:`~voxflow.narrate.document.Document` (plain text, Markdown, EPUB)
prepare      Document → chunks the engine can speak (cleaning, sentences, packing)
lexicon      pronunciation respellings applied to the spoken text
assembly/    chunk audio → mastered, tagged MP3 files (and an M4B) with a read-along VTT
"""
