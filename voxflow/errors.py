"""The one exception tree of voxflow.

Every failure a user can meet is one of these; the tree tells what to catch::

    VoxflowError
    ├── ConfigError               bad settings or flags                 → exit 2
    ├── SourceError               cannot list or read a source
    ├── AudioError                ffprobe/ffmpeg failed, no audio stream, undecodable
    ├── TextError                 a document cannot be read or has nothing to speak
    │   └── LanguageMismatch      the voice does not speak the document's language
    ├── EngineError
    │   ├── TransientEngineError  worth retrying
    │   │   ├── RateLimited       429 (carries retry_after seconds)
    │   │   ├── EngineUnavailable 5xx, 524, 529, connection errors
    │   │   └── EngineTimeout     408 or our own request timeout
    │   ├── PermanentEngineError  fail this item, never retry
    │   │   ├── RequestRejected   400, 403, 413 (status kept)
    │   │   └── BadResponse       2xx we cannot understand
    │   │       ├── LinesMismatch a translation that lost, merged or added lines
    │   │       └── MinutesInvalid an answer that is not minutes JSON, twice
    │   └── RunAbort              stop the whole run at once               → exit 3
    │       ├── AuthError         401
    │       ├── OutOfCredits      402
    │       ├── UnknownModel      404 for the model, or not in /models
    │       ├── BudgetExceeded    --budget-usd reached
    │       └── DiskFull          the output's disk is full (also an OutputError)
    └── OutputError               cannot write a sidecar, audiobook or Parquet part → exit 3

Messages name the file and the reason, never the API key or audio payloads.
"""

from __future__ import annotations

import errno
from enum import IntEnum
from typing import ClassVar


class VoxflowError(Exception):
    """Base of every voxflow error; ``kind`` is what lands in ``error_kind``. ``permanent``: the
    same file with the same options fails the same way again (not worth retrying every night)."""

    permanent: ClassVar[bool] = False

    @property
    def kind(self) -> str:
        return type(self).__name__


class NotStarted(VoxflowError):
    """An item the run never started because it had aborted first (its ``error_kind``; the
    abort itself is in the manifest)."""

    @classmethod
    def after(cls, abort: BaseException) -> NotStarted:
        return cls(f"not started: {abort}")


class ConfigError(VoxflowError):
    """Bad settings, flags or an unusable environment (exit code 2)."""


class SourceError(VoxflowError):
    """A source cannot be listed or a file cannot be read."""

    permanent = True


class AudioError(VoxflowError):
    """ffprobe/ffmpeg failed, the file has no audio stream, or it does not decode."""

    permanent = True


class TextError(VoxflowError):
    """A document cannot be read, or it has nothing that can be spoken."""

    permanent = True


class LanguageMismatch(TextError):
    """The voice does not speak the document's language (an English voice, a French book)."""


class EngineError(VoxflowError):
    """A speech engine failed."""


class TransientEngineError(EngineError):
    """A failure worth retrying after a pause; ``retry_after`` is the server's advice in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(TransientEngineError):
    """HTTP 429."""


class EngineUnavailable(TransientEngineError):
    """5xx, 524, 529, or the connection failed."""


class EngineTimeout(TransientEngineError):
    """HTTP 408 or the request outlived its timeout."""


class PermanentEngineError(EngineError):
    """Fail this item at once; retrying cannot help."""

    permanent = True


class RequestRejected(PermanentEngineError):
    """HTTP 400/403/413: the engine refused this request."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class BadResponse(PermanentEngineError):
    """The engine answered 2xx with something we cannot use. ``transient``: the body was cut
    short (almost always a dropped connection), so the request is worth sending again."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class LinesMismatch(BadResponse):
    """A chat answer whose numbered lines are not the ones sent (lost, merged or added): its
    translation would not match the original's cues, so it is never written. ``cost_usd``: what
    the answers cost all the same."""

    def __init__(self, message: str, cost_usd: float = 0.0) -> None:
        super().__init__(message, transient=False)
        self.cost_usd = cost_usd


class MinutesInvalid(BadResponse):
    """A chat answer that is not minutes JSON (asked twice): no minutes are written."""


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


class DiskFull(OutputError, RunAbort):
    """No space left where the outputs (or the run's temporary audio) go: every further item
    would fail the same way, so the run stops (exit code 3) saying where and what to do."""

    def __init__(self, path: object) -> None:
        super().__init__(f"cannot write {path}: No space left on device (free some space, or choose another --out)")


def output_error(path: object, exc: OSError) -> OutputError:
    """The OutputError for an OS error while writing ``path`` (DiskFull when the disk is full)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(path)
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


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


def kind_is_permanent(kind: str | None) -> bool:
    """Whether an ``error_kind`` read back from the catalog names a permanent error class."""
    classes = [VoxflowError]
    while classes:
        cls = classes.pop()
        if cls.__name__ == kind:
            return cls.permanent
        classes.extend(cls.__subclasses__())
    return False


class ExitCode(IntEnum):
    """The documented exit codes of ``voxflow``."""

    OK = 0
    SOME_FAILED = 1
    USAGE = 2
    ABORTED = 3
    INTERRUPTED = 130


_BUCKET_HINTS = {  # botocore's exception class name → what the user should do
    "NoCredentialsError": "no credentials for the bucket: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "(or AWS_PROFILE)",
    "PartialCredentialsError": "incomplete bucket credentials: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
}
_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionRefusedError")


def explain(exc: BaseException) -> tuple[str, ExitCode]:
    """The one place an error becomes what the user reads (one line) and the exit code."""
    chain = _causes(exc)
    todo = next((f" ({_TODO[e.errno]})" for e in chain if isinstance(e, OSError) and e.errno in _TODO), "")
    if isinstance(exc, ConfigError | SourceError):
        return str(exc), ExitCode.USAGE
    if isinstance(exc, RunAbort | OutputError):
        return f"{exc.kind}: {exc}{todo}", ExitCode.ABORTED
    if isinstance(exc, VoxflowError):
        return f"{exc.kind}: {exc}", ExitCode.USAGE
    names = {type(e).__name__ for e in chain}
    from_bucket = any(type(e).__module__.split(".")[0] in ("botocore", "aiobotocore", "s3fs") for e in chain)
    if hint := next((_BUCKET_HINTS[n] for n in names if n in _BUCKET_HINTS), None):
        return hint, ExitCode.USAGE
    if from_bucket and names & set(_UNREACHABLE):
        import os

        where = os.environ.get("AWS_ENDPOINT_URL") or "the storage service"
        return f"cannot reach {where}: check AWS_ENDPOINT_URL and that the service is up", ExitCode.USAGE
    if isinstance(exc, OSError):
        return _os_error(exc) + todo, ExitCode.USAGE if exc.errno in _SETUP_ERRNOS else ExitCode.ABORTED
    return f"unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)", ExitCode.ABORTED


_TODO = {  # what the user can do about an OS error
    errno.ENOSPC: "free some space, or choose another --out",
    errno.EDQUOT: "free some space under your quota, or choose another --out",
    errno.EROFS: "choose an --out on a writable file system",
    errno.EACCES: "choose a folder you can write to",
}
_SETUP_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.ENOENT, errno.EISDIR}


def _os_error(exc: OSError) -> str:
    where = f" {exc.filename}" if exc.filename else ""
    return f"cannot use{where}: {exc.strerror or exc}"


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the chain of exceptions that caused it."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return chain
