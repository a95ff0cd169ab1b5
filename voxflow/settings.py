"""All configuration, read once: ``VOXFLOW_*`` environment variables, ``OPENROUTER_*`` for
the API, and CLI flags layered on top (flags win)."""

from __future__ import annotations

import os
from functools import cached_property
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from voxflow.errors import ConfigError

LOCAL_STT_DEFAULT = "local/auto"  # detect per window: English → tiny.en, other languages → base
LOCAL_TTS_DEFAULT = "local/en_US-joe-medium"
OPENROUTER_STT_DEFAULT = "openai/whisper-large-v3"
OPENROUTER_TTS_DEFAULT = "openai/gpt-4o-mini-tts-2025-12-15"
OPENROUTER_CHAT_DEFAULT = "openai/gpt-4o-mini"  # translates subtitles into any --translate-to language
SUBTITLE_FORMATS = ("srt", "vtt", "txt", "json")


class OpenRouterSettings(BaseSettings):
    """Where and how to reach OpenRouter. The key is a SecretStr: it never prints."""

    model_config = SettingsConfigDict(env_prefix="OPENROUTER_", extra="ignore")

    api_key: SecretStr | None = None
    base_url: str = "https://openrouter.ai/api/v1"
    app_url: str | None = None  # sent as HTTP-Referer
    app_title: str | None = "voxflow"  # sent as X-OpenRouter-Title

    @property
    def has_key(self) -> bool:
        return self.api_key is not None and bool(self.api_key.get_secret_value())


class Settings(BaseSettings):
    """Run settings. Every field is also ``VOXFLOW_<NAME>`` in the environment."""

    # an empty variable (`VOXFLOW_CONCURRENCY= voxflow …`) is as if unset; lists are comma-separated
    model_config = SettingsConfigDict(env_prefix="VOXFLOW_", extra="ignore", frozen=True, env_ignore_empty=True)

    out: str = "voxflow-out"
    model: str | None = None  # None: OpenRouter default with a key, else the local engine
    voice: str | None = None
    language: str | None = None  # ISO-639-1 code; None (or "auto") = detect
    translate_to: Annotated[tuple[str, ...], NoDecode] = ()  # ISO-639-1 codes: also write a translation into each
    translation_model: str = OPENROUTER_CHAT_DEFAULT  # OpenRouter chat model for --translate-to
    minutes: bool = False  # also write <stem>.minutes.md (summary, decisions, action items) through chat
    minutes_model: str = OPENROUTER_CHAT_DEFAULT  # OpenRouter chat model for --minutes
    audio_language: str | None = None  # ISO-639-1: the audio track to transcribe in a file with several
    formats: Annotated[tuple[str, ...], NoDecode] = SUBTITLE_FORMATS
    concurrency: int = Field(default=8, ge=1, le=256)
    budget_usd: float | None = Field(default=None, ge=0)
    force: bool = False
    retry_failed: bool = False  # try again recordings that failed for good and have not changed
    beside_source: bool = False
    follow_symlinks: bool = False  # follow symlinks that lead out of the source (never opens special files)
    settle_seconds: float = Field(default=0.0, ge=0)
    max_chunk_s: float = Field(default=600.0, ge=1)  # longest piece sent to an engine
    min_silence_s: float = Field(default=0.35, gt=0)
    silence_db: float = -35.0
    local_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)  # the embedded engine's, in all
    local_processes: int = Field(default_factory=lambda: min(2, os.cpu_count() or 1), ge=1)  # engine processes
    workers: int = Field(default=0, ge=0)  # recordings in flight; 0 = derived from concurrency
    request_timeout_s: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=6, ge=1)
    retry_backoff_s: float = Field(default=1.0, gt=0)  # base of the exponential backoff
    diarize: bool = False
    keyterms: Annotated[tuple[str, ...], NoDecode] = ()
    temperature: float | None = None
    provider: dict[str, Any] | None = None  # OpenRouter provider routing/passthrough (JSON in the env)
    shard: str | None = None  # "i/n": this worker takes recordings whose id hashes to i mod n
    cluster: str | None = None  # tcp://HOST:PORT of a Dask scheduler, or local:N worker processes
    overwrite: bool = False  # replace sidecar files voxflow did not write (a user's own subtitles)
    wait: bool = False  # wait for another run on the same output to finish instead of exiting 2
    quiet: bool = False  # the CLI prints only errors and the summary
    lock_lease_s: float = Field(default=60.0, ge=1)  # bucket outputs: a dead run's lease expires after this

    @field_validator("formats", mode="before")
    @classmethod
    def _split_formats(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v.strip().lower() for v in value.split(",") if v.strip()]
        bad = [v for v in value if v not in SUBTITLE_FORMATS]  # type: ignore[union-attr]
        if bad or not value:
            raise ValueError(f"must be one or more of {','.join(SUBTITLE_FORMATS)}")
        return tuple(value)  # type: ignore[arg-type]

    @field_validator("language")
    @classmethod
    def _check_language(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in ("", "auto"):
            return None
        return iso_639_1(value)

    @field_validator("audio_language")
    @classmethod
    def _check_audio_language(cls, value: str | None) -> str | None:
        return iso_639_1(value) if value and value.strip() else None

    @field_validator("translate_to", mode="before")
    @classmethod
    def _split_translate_to(cls, value: object) -> object:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        codes = []
        for item in value:  # type: ignore[union-attr]
            try:
                codes.append(iso_639_1(item, detect=False))
            except ValueError as exc:
                raise ValueError(f"{item.strip()!r}: {exc}") from None
        return tuple(dict.fromkeys(codes))

    @field_validator("cluster")
    @classmethod
    def _check_cluster(cls, value: str | None) -> str | None:
        from voxflow.cluster import check_cluster

        return check_cluster(value) if value else None

    @field_validator("shard")
    @classmethod
    def _check_shard(cls, value: str | None) -> str | None:
        if value is None:
            return value
        index, _, count = value.partition("/")
        if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
            raise ValueError("must be i/n with 0 <= i < n (e.g. 0/3)")
        return value

    @field_validator("keyterms", mode="before")
    @classmethod
    def _split_keyterms(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @cached_property
    def openrouter(self) -> OpenRouterSettings:
        return OpenRouterSettings()

    @property
    def transcription_model(self) -> str:
        """The model id this run uses for speech-to-text."""
        if self.model:
            return self.model
        return OPENROUTER_STT_DEFAULT if self.openrouter.has_key else LOCAL_STT_DEFAULT

    @property
    def speech_model(self) -> str:
        """The model id this run uses for text-to-speech."""
        if self.model:
            return self.model
        return OPENROUTER_TTS_DEFAULT if self.openrouter.has_key else LOCAL_TTS_DEFAULT

    @property
    def offline_translation(self) -> bool:
        """True when ``--translate-to en`` is made offline (Whisper's translate task on the
        embedded multilingual model); every other target goes through OpenRouter chat."""
        return "en" in self.translate_to and self.transcription_model.startswith("local/")

    @property
    def chat_targets(self) -> tuple[str, ...]:
        """The --translate-to languages translated through OpenRouter chat, in the order given."""
        return tuple(code for code in self.translate_to if code != "en" or not self.offline_translation)

    @property
    def recording_workers(self) -> int:
        """How many recordings are prepared and transcribed at once."""
        return self.workers or min(self.concurrency + 2, 32)

    def public_dict(self) -> dict[str, object]:
        """Settings fit for a manifest or Prefect parameters: no secrets in here."""
        return self.model_dump(mode="json")


def iso_639_1(value: str, detect: bool = True) -> str:
    """``value`` as a two-letter ISO-639-1 code (``EN`` → ``en``, ``iw`` → ``he``), else
    ValueError (naming ``auto`` where detection is an option)."""
    import langcodes

    code = value.strip().lower()
    if len(code) == 2 and code.isalpha() and langcodes.tag_is_valid(code):
        return langcodes.standardize_tag(code)
    try:
        hint = f" (did you mean {langcodes.find(value).language}?)"
    except LookupError:
        hint = ""
    auto = ", or auto to detect" if detect else ""
    raise ValueError(f"must be an ISO-639-1 code such as en, de or fr{auto}{hint}")


_RULES = {  # pydantic error type → the rule in the user's words
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "greater_than": "must be more than {gt}",
    "less_than": "must be less than {lt}",
}


def _describe(error: ErrorDetails, flags: set[str]) -> str:
    """One validation error as "--flag (VOXFLOW_FLAG) must …, got X"."""
    field = str(error["loc"][0]) if error["loc"] else "settings"
    env = f"VOXFLOW_{field.upper()}"
    name = f"--{field.replace('_', '-')} ({env})" if field in flags else env
    ctx = error.get("ctx") or {}
    if error["type"] == "value_error":
        rule = str(ctx.get("error", error["msg"]))
    else:
        rule = _RULES.get(error["type"], "").format(**ctx) or error["msg"].replace("Input should be", "must be")
    got = error.get("input")
    return f"{name} {rule}, got {got!r}" if isinstance(got, str) else f"{name} {rule}, got {got}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment with non-None ``overrides`` (CLI flags) on top; the names
    of ``overrides`` are the command's flags, so errors name the flag and its variable."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(e, set(overrides)) for e in exc.errors())) from exc
