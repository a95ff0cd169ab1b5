"""A document's language against the voice's: the declared language (EPUB dc:language, a
txt/Markdown ``language:`` header) first, else the text's, told by py3langid; a Piper voice
speaks the language of its config (``language.code``); OpenRouter voices are taken as
multilingual (the listings do not say). A book the voice cannot speak is refused
(:class:`LanguageMismatch`); a text too short to tell is narrated, with a note."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Literal

from voxflow.engines.base import is_local as is_local_model
from voxflow.errors import ConfigError, LanguageMismatch
from voxflow.models import language_code
from voxflow.narrate.document import Document, PrepNote

MIN_WORDS = 12  # fewer words than this: the detector's answer is not trusted
MIN_CONFIDENCE = 0.9  # py3langid's normalised probability of its best language
SAMPLE_CHARS = 6000  # the text looked at: enough for a sure answer, cheap on a long book
BUNDLED_VOICES = {"en": "local/en_US-joe-medium"}  # the offline voices that ship with voxflow

LanguageSource = Literal["declared", "detected", "unknown"]


@dataclass(frozen=True, slots=True)
class DocumentLanguage:
    """A document's ISO-639-1 language (None: not told) and where it came from."""

    code: str | None
    source: LanguageSource
    words: int = 0


def document_language(doc: Document) -> DocumentLanguage:
    """The declared language, else the detected one when the text is long and clear enough."""
    if doc.language:
        return DocumentLanguage(doc.language, "declared")
    sample = _sample(doc)
    words = len(sample.split())
    if words < MIN_WORDS:
        return DocumentLanguage(None, "unknown", words)
    code, confidence = _identifier().classify(sample)
    if confidence < MIN_CONFIDENCE or language_code(code) == "und":
        return DocumentLanguage(None, "unknown", words)
    return DocumentLanguage(language_code(code), "detected", words)


def _sample(doc: Document) -> str:
    parts: list[str] = []
    size = 0
    for chapter in doc.chapters:
        for paragraph in chapter.paragraphs:
            parts.append(paragraph)
            size += len(paragraph)
            if size >= SAMPLE_CHARS:
                return " ".join(parts)[:SAMPLE_CHARS]
    return " ".join(parts)


@cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def voice_language(model: str) -> str | None:
    """ISO-639-1 language of a local Piper voice (its config's language.code); None for a
    multilingual (OpenRouter) voice or one whose config does not say."""
    if not is_local_model(model):
        return None
    try:
        from voxflow.engines.local import resolve_voice

        _onnx, config = resolve_voice(model)
        code = json.loads(Path(config).read_text())["language"]["code"]
    except (ConfigError, OSError, KeyError, TypeError, ValueError):
        return None
    found = language_code(str(code))
    return None if found == "und" else found


def check_language(doc: Document, model: str) -> Document:
    """The document with its language filled in (or a "language" note when it could not be
    told: then it is narrated as is). Raises LanguageMismatch when the voice speaks another
    language than the document's."""
    told = document_language(doc)
    if told.code is None:
        why = "too short" if told.words < MIN_WORDS else "not clear enough"
        note = f"{why} to tell its language ({told.words} words): not checked against the voice"
        return replace(doc, notes=(*doc.notes, PrepNote("language", note)))
    spoken = voice_language(model)
    if spoken is not None and spoken != told.code:
        raise LanguageMismatch(mismatch_message(told, model, spoken))
    return replace(doc, language=told.code)


def mismatch_message(told: DocumentLanguage, model: str, spoken: str) -> str:
    """One line: both languages, how the document's was found, and what to do."""
    name = language_name(told.code or "")
    how = "declared in the file" if told.source == "declared" else "detected from its text"
    known = BUNDLED_VOICES.get(told.code or "")
    fix = (
        f"use --voice {known}"
        if known
        else f"use --voice local/<folder> with a {name} Piper voice (<name>.onnx + <name>.onnx.json), "
        "or an OpenRouter voice (--model, multilingual)"
    )
    return (
        f"written in {name} ({told.code}, {how}) but the voice {model} speaks {language_name(spoken)} ({spoken}): {fix}"
    )


def language_name(code: str) -> str:
    """'fr' → 'French' (langcodes), the code itself when it has no name."""
    import langcodes

    try:
        return langcodes.Language.get(code).display_name()
    except (ValueError, LookupError):
        return code
