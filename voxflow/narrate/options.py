"""Narration options: what a run may ask of the voice (formats, speed, instructions, pauses,
lexicons) and the checks that refuse a setting the engine would ignore, before any work."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from voxflow.engines.base import SynthesisOptions
from voxflow.engines.base import is_local as is_local_model
from voxflow.errors import ConfigError
from voxflow.narrate.assembly.options import AssemblyOptions, Pauses
from voxflow.narrate.lexicon import Lexicon
from voxflow.settings import Settings

NARRATION_VERSION = "1"  # bump when the output layout changes: every book is re-assembled


LATIN_LANGUAGES = frozenset(
    [
        "en",
        "fr",
        "de",
        "es",
        "it",
        "pt",
        "nl",
        "da",
        "sv",
        "no",
        "nb",
        "nn",
        "fi",
        "pl",
        "cs",
        "sk",
        "hu",
        "ro",
        "ca",
        "cy",
        "is",
        "lb",
        "sw",
        "tr",
        "vi",
        "id",
        "ms",
        "sl",
        "hr",
        "et",
        "lv",
        "lt",
        "eu",
        "gl",
        "ga",
        "mt",
        "af",
        "sq",
    ]
)


@dataclass(frozen=True, slots=True)
class NarrationOptions:
    """What changes a narration besides the settings (model, voice, concurrency, budget)."""

    per_chapter: bool = True
    formats: tuple[str, ...] = ("mp3",)
    instructions: str | None = None
    speed: float | None = None
    max_chunk_chars: int | None = None  # None: the engine's input limit
    credits: bool = False
    lexicon: tuple[str, ...] = ()  # global lexicon files (a book's own is found beside it)
    pauses: Pauses = field(default_factory=Pauses)
    bitrate: str = "192k"
    max_file_minutes: float = 120.0

    def assembly(self) -> AssemblyOptions:
        return AssemblyOptions(
            per_chapter=self.per_chapter,
            formats=self.formats,
            bitrate=self.bitrate,
            max_file_ms=round(self.max_file_minutes * 60_000),
            credits=self.credits,
            pauses=self.pauses,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> NarrationOptions:
        data = dict(data or {})
        if isinstance(data.get("pauses"), Mapping):
            data["pauses"] = Pauses(**data["pauses"])
        for key in ("formats", "lexicon"):
            if key in data and data[key] is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def parse_formats(fmt: str | Sequence[str] | None) -> tuple[str, ...]:
    """``--format``: mp3 (default), m4b (the MP3s plus one M4B of the same render), both."""
    if fmt is None:
        return ("mp3",)
    values = [v.strip().lower() for v in (fmt.split(",") if isinstance(fmt, str) else fmt)]
    out: list[str] = []
    for v in values:
        if v in ("both", "m4b"):
            out += ["mp3", "m4b"]
        elif v == "mp3":
            out.append("mp3")
        elif v:
            raise ConfigError(f"unknown format {v!r}: use mp3 or m4b")
    return tuple(dict.fromkeys(out)) or ("mp3",)


def synthesis_options(settings: Settings, options: NarrationOptions, model: str) -> SynthesisOptions:
    return SynthesisOptions(model=model, voice=settings.voice, instructions=options.instructions, speed=options.speed)


def voice_is_latin(model: str) -> bool:
    """True for a local Piper voice of a Latin-script language (drop other scripts, emoji)."""
    if not is_local_model(model):
        return False
    from voxflow.narrate.language import voice_language

    code = voice_language(model)
    return code is None or code in LATIN_LANGUAGES


def voice_as_model(model: str | None, voice: str | None) -> tuple[str | None, str | None]:
    """``--voice local/<folder>`` names a whole Piper voice, which is the model: (model, voice)
    as the engine takes them. ConfigError when ``--model`` names another one."""
    if not voice or not is_local_model(voice):
        return model, voice
    if model and model != voice:
        raise ConfigError(
            f"--voice {voice} is a Piper voice, so it is the model: leave --model {model} out (or give the same)"
        )
    return voice, None


def narrator_label(model: str, voice: str | None) -> str:
    name = model.split("/", 1)[-1]
    if voice:
        name += f", voice {voice}"
    return f"a synthetic voice ({name})"


SPEED_RANGE = (0.25, 4.0)  # Piper (length_scale = 1 / speed) and OpenAI-style speech APIs alike


def validate_narration(settings: Settings, options: NarrationOptions) -> None:
    """Refuse, before any work, a setting that would otherwise be silently ignored: one
    ConfigError line naming the flag, its environment variable and what to do."""
    for path, origin in _lexicon_settings(options):
        _check_lexicon(path, origin)
    low, high = SPEED_RANGE
    if options.speed is not None and not low <= options.speed <= high:
        raise ConfigError(
            f"--speed {options.speed:g}: outside the range of {settings.speech_model}: "
            f"use {low:g} to {high:g} (1.0 = normal speed)"
        )
    if settings.voice and is_local_model(settings.speech_model):
        voices = local_voices(settings.speech_model)
        if settings.voice not in voices:
            choice = f"use one of {', '.join(sorted(voices))}" if voices else "it has a single voice: leave --voice out"
            raise ConfigError(
                f"--voice {settings.voice} (VOXFLOW_VOICE): the offline voice {settings.speech_model} has no voice "
                f"{settings.voice!r}: {choice}"
            )


def _lexicon_settings(options: NarrationOptions) -> list[tuple[str, str]]:
    env = os.environ.get("VOXFLOW_LEXICON") or ""
    return [(p, "--lexicon") for p in options.lexicon] + [(p, "VOXFLOW_LEXICON") for p in env.split(os.pathsep) if p]


def _check_lexicon(path: str, origin: str) -> None:
    where = f"--lexicon / VOXFLOW_LEXICON {path}" if origin == "--lexicon" else f"VOXFLOW_LEXICON / --lexicon {path}"
    if not Path(path).expanduser().is_file():
        raise ConfigError(f"{where}: no such file: give an existing .toml or .txt lexicon")
    try:
        Lexicon.load([path])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}: fix the file or leave it out") from None


def local_voices(model: str) -> frozenset[str]:
    """Speaker names of a local Piper voice (empty for a single-speaker voice)."""
    from voxflow.engines.local import resolve_voice

    _onnx, config = resolve_voice(model)
    try:
        speakers = json.loads(Path(config).read_text()).get("speaker_id_map") or {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the voice config {config}: {exc}") from exc
    return frozenset(speakers)
