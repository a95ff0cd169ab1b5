"""The one exception tree of voxflow.

Every failure a user can meet is one of these; the tree tells what to catch::

    VoxflowError
    ├── ConfigError               bad settings or flags                 → exit 2
    ├── SourceError               cannot list or read a source
    ├── AudioError                ffprobe/ffmpeg failed, no audio stream, undecodable
    ├── TextError                 a document cannot be read or has nothing to speak
    ├── EngineError
    │   ├── TransientEngineError  worth retrying
    │   │   ├── RateLimited       429 (carries retry_after seconds)
    │   │   ├── EngineUnavailable 5xx, 524, 529, connection errors
    │   │   └── EngineTimeout     408 or our own request timeout
    │   ├── PermanentEngineError  fail this item, never retry
    │   │   ├── RequestRejected   400, 403, 413 (status kept)
    │   │   └── BadResponse       2xx we cannot understand
    │   └── RunAbort              stop the whole run at once               → exit 3
    │       ├── AuthError         401
    │       ├── OutOfCredits      402
    │       ├── UnknownModel      404 for the model, or not in /models
    │       └── BudgetExceeded    --budget-usd reached
    └── OutputError               cannot write a sidecar, audiobook or Parquet part

Messages name the file and the reason, never the API key or audio payloads.
"""

from __future__ import annotations


class VoxflowError(Exception):
    """Base of every voxflow error; ``kind`` is what lands in ``error_kind``."""

    @property
    def kind(self) -> str:
        return type(self).__name__


class ConfigError(VoxflowError):
    """Bad settings, flags or an unusable environment (exit code 2)."""


class SourceError(VoxflowError):
    """A source cannot be listed or a file cannot be read."""


class AudioError(VoxflowError):
    """ffprobe/ffmpeg failed, the file has no audio stream, or it does not decode."""


class TextError(VoxflowError):
    """A document cannot be read, or it has nothing that can be spoken."""


class EngineError(VoxflowError):
    """A speech engine failed."""


class TransientEngineError(EngineError):
    """A failure worth retrying after a pause."""


class RateLimited(TransientEngineError):
    """HTTP 429; ``retry_after`` is the server's advice in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EngineUnavailable(TransientEngineError):
    """5xx, 524, 529, or the connection failed."""


class EngineTimeout(TransientEngineError):
    """HTTP 408 or the request outlived its timeout."""


class PermanentEngineError(EngineError):
    """Fail this item at once; retrying cannot help."""


class RequestRejected(PermanentEngineError):
    """HTTP 400/403/413: the engine refused this request."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class BadResponse(PermanentEngineError):
    """The engine answered 2xx with something we cannot use."""


class RunAbort(EngineError):
    """Stop the whole run at once (exit code 3)."""


class AuthError(RunAbort):
    """HTTP 401: the API key is missing or wrong."""


class OutOfCredits(RunAbort):
    """HTTP 402: the account has no credits left."""


class UnknownModel(RunAbort):
    """The model (or voice) does not exist."""


class BudgetExceeded(RunAbort):
    """Starting more work would exceed ``--budget-usd``."""


class OutputError(VoxflowError):
    """A sidecar, audiobook or Parquet part cannot be written."""


def most_severe(group: BaseExceptionGroup) -> BaseException:
    """The one error that explains a failed fan-out (an ``asyncio.TaskGroup``): a RunAbort
    first, else the first real error; cancellations of the siblings are not the cause."""
    import asyncio

    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, asyncio.CancelledError):
            leaves.append(exc)

    walk(group)
    aborts = [e for e in leaves if isinstance(e, RunAbort)]
    return (aborts or leaves or [group])[0]
