"""The pronunciation lexicon: respellings (and phonemes) applied to the spoken text of each
chunk, read from TOML or ``word = respelling | ipa`` files (global, then per book)."""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from voxflow.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LexiconEntry:
    term: str
    say: str | None = None  # respelling, for every voice
    ipa: str | None = None  # phonemes, for voices that take them (Piper: [[ … ]])


@dataclass(frozen=True)
class Lexicon:
    """Pronunciation respellings applied to sentences before synthesis (whole words,
    case-insensitive). Later files override earlier ones (global, then per book)."""

    entries: tuple[LexiconEntry, ...] = ()
    sources: tuple[str, ...] = field(default=())

    @classmethod
    def load(cls, paths: Iterable[str | Path]) -> Lexicon:
        merged: dict[str, LexiconEntry] = {}
        used = []
        for raw in paths:
            path = Path(raw).expanduser()
            if not path.is_file():
                continue
            used.append(str(path))
            for entry in _read_lexicon(path):
                merged[entry.term.lower()] = entry
        return cls(tuple(merged.values()), tuple(used))

    def digest(self) -> str:
        blob = json.dumps([[e.term, e.say, e.ipa] for e in self.entries], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def _pattern(self) -> re.Pattern[str] | None:
        return _lexicon_pattern(tuple(e.term for e in self.entries))

    def apply(self, text: str, *, phonemes: bool = False) -> str:
        """``text`` with every lexicon word replaced by its respelling (or phonemes)."""
        pattern = self._pattern
        if pattern is None:
            return text
        table = {e.term.lower(): e for e in self.entries}

        def replace(m: re.Match[str]) -> str:
            entry = table[m.group(0).lower()]
            if phonemes and entry.ipa:
                return f"[[ {entry.ipa} ]]"
            return entry.say or m.group(0)

        return pattern.sub(replace, text)


@lru_cache(maxsize=64)
def _lexicon_pattern(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    if not terms:
        return None
    alternatives = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
    return re.compile(rf"(?<![\w'’-])(?:{alternatives})(?![\w'’-])", re.IGNORECASE)


def _read_lexicon(path: Path) -> list[LexiconEntry]:
    """A lexicon file: TOML (``[words]`` table of ``term = "respelling"`` or
    ``term = { say = "…", ipa = "…" }``) or lines ``term = respelling | ipa``."""
    entries: list[LexiconEntry] = []
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read lexicon {path}: {exc}") from exc
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(raw)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"lexicon {path} is not valid TOML: {exc}") from exc
        words = data.get("words", data)
        for term, value in words.items():
            if isinstance(value, str):
                entries.append(LexiconEntry(term, say=value))
            elif isinstance(value, dict):
                entries.append(LexiconEntry(term, say=value.get("say"), ipa=value.get("ipa")))
        return [e for e in entries if e.term.strip() and (e.say or e.ipa)]
    for n, line in enumerate(raw.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        term, sep, value = line.partition("=")
        if not sep or not term.strip():
            raise ConfigError(f"lexicon {path}:{n}: expected 'word = respelling [| ipa]'")
        say, _, ipa = value.partition("|")
        entries.append(LexiconEntry(term.strip(), say.strip() or None, ipa.strip() or None))
    return entries
