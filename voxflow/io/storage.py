"""Where bytes live: local folders and buckets behind one fsspec API (S3 settings, URIs,
opening only regular files, local copies of remote objects, atomic local writes)."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import uuid
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Literal

import fsspec
from fsspec.core import url_to_fs
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from voxflow.errors import SourceError, output_error

# What voxflow itself writes under ``--out``: never scanned when ``--out`` is the source or holds it.
OUTPUT_FOLDERS = ("catalog", "runs", "audiobooks", ".voxflow")


SkipReason = Literal[
    "named pipe (FIFO)",
    "socket",
    "character device",
    "block device",
    "special file",
    "broken symlink",
    "symlink loop",
    "symlink out of the source",
    "folder already listed",
    "unreadable folder",
]


def special_reason(mode: int) -> SkipReason:
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


REMOTE_BLOCK = 8 << 20  # one ranged GET per 8 MiB when hashing an object


# Object stores: an object appears whole (one PUT), so it never needs to settle.
OBJECT_STORES = frozenset(["s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"])


S3_PROTOCOLS = ("s3://", "s3a://")


class S3Settings(BaseSettings):
    """``VOXFLOW_S3_*``: overrides of the standard AWS settings for ``s3://`` URLs.

    Unset fields fall back to botocore's own chain (``AWS_*`` variables, ``~/.aws/config`` and
    ``~/.aws/credentials`` profiles, instance roles). The secret never prints.
    """

    model_config = SettingsConfigDict(env_prefix="VOXFLOW_S3_", extra="ignore")

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000 (MinIO, SeaweedFS, moto, R2 …)
    region: str | None = None
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    anon: bool = False
    addressing_style: str | None = None  # "path" or "virtual" for S3-compatible stores


_S3_ENV = (
    "VOXFLOW_S3_ENDPOINT_URL",
    "VOXFLOW_S3_REGION",
    "VOXFLOW_S3_PROFILE",
    "VOXFLOW_S3_ACCESS_KEY_ID",
    "VOXFLOW_S3_SECRET_ACCESS_KEY",
    "VOXFLOW_S3_ANON",
    "VOXFLOW_S3_ADDRESSING_STYLE",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


def s3_storage_options() -> dict[str, Any]:
    """s3fs keyword arguments from the environment (read on every call; cheap, memoised)."""
    return dict(_s3_options(tuple(os.environ.get(k) for k in _S3_ENV)))


@lru_cache(maxsize=16)
def _s3_options(env: tuple[str | None, ...]) -> tuple[tuple[str, Any], ...]:
    given = dict(zip(_S3_ENV, env, strict=True))
    s = S3Settings()
    # botocore >= 1.31 reads AWS_ENDPOINT_URL itself; passing it explicitly also covers older
    # versions and the VOXFLOW_ override.
    endpoint = s.endpoint_url or given["AWS_ENDPOINT_URL_S3"] or given["AWS_ENDPOINT_URL"]
    region = s.region or given["AWS_REGION"] or given["AWS_DEFAULT_REGION"]
    opts: dict[str, Any] = {"use_listings_cache": False}
    if endpoint:
        opts["endpoint_url"] = endpoint
    if region:
        opts["client_kwargs"] = {"region_name": region}
    if s.profile:
        opts["profile"] = s.profile
    if s.access_key_id and s.secret_access_key:
        opts["key"] = s.access_key_id
        opts["secret"] = s.secret_access_key.get_secret_value()
    if s.anon:
        opts["anon"] = True
    if s.addressing_style:
        opts["config_kwargs"] = {"s3": {"addressing_style": s.addressing_style}}
    return tuple(opts.items())


def protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    return fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in protocols(fs)


def is_object_store(fs: fsspec.AbstractFileSystem) -> bool:
    """True for buckets, where objects appear whole and carry an ETag."""
    return any(p in OBJECT_STORES for p in protocols(fs))


def resolve(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path) for a local path or fsspec URL; local paths become absolute.

    ``s3://`` URLs get the endpoint, region and credentials of :func:`s3_storage_options`.
    """
    if "://" not in url:
        url = str(Path(url).expanduser().resolve())
    options = s3_storage_options() if url.startswith(S3_PROTOCOLS) else {}
    try:
        return url_to_fs(url, **options)
    except (ImportError, ValueError) as exc:
        raise SourceError(f"cannot open {url}: {exc}") from exc


def full_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URI a user can paste back: a plain path locally, ``proto://path`` otherwise."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def inside(path: str, folder: str | None) -> bool:
    return bool(folder) and (path == folder or path.startswith(folder.rstrip("/") + "/"))


def under(uri: str, root_uri: str) -> bool:
    """True when ``uri`` is ``root_uri`` or inside it (plain string prefix on '/')."""
    return uri == root_uri or uri.startswith(root_uri.rstrip("/") + "/")


@contextlib.contextmanager
def open_input(uri: str, *, cache_type: str = "readahead") -> Iterator[Any]:
    """A binary file object for ``uri`` that streams: ranged GETs of 8 MiB on a bucket,
    never the whole object in memory. Failing to open it raises SourceError."""
    fs, path = resolve(uri)
    if is_local(fs):
        with open_regular(path, uri) as fh:
            yield fh
        return
    try:
        fh = fs.open(path, "rb", block_size=REMOTE_BLOCK, cache_type=cache_type)
    except OSError as exc:
        raise read_error(uri, exc) from exc
    with fh:
        yield fh


@contextlib.contextmanager
def open_regular(path: str, uri: str) -> Iterator[BinaryIO]:
    """A local file opened for reading only if it is a regular file: a FIFO, socket or device
    (also behind a symlink) is refused with SourceError before it is opened, so it can neither
    block nor stream forever."""
    try:
        _require_regular(uri, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)  # never waits for a writer
    except OSError as exc:
        raise read_error(uri, exc) from exc
    try:
        _require_regular(uri, os.fstat(fd).st_mode)  # it may have been swapped since the stat
        os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh


def _require_regular(uri: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise SourceError(f"cannot read {uri}: it is a {special_reason(mode)}, not a regular file")


def read_error(uri: str, exc: BaseException) -> SourceError:
    if isinstance(exc, PermissionError):
        return SourceError(f"cannot read {uri}: permission denied")
    if isinstance(exc, FileNotFoundError):
        return SourceError(f"cannot read {uri}: it no longer exists")
    return SourceError(f"cannot read {uri}: {getattr(exc, 'strerror', None) or exc}")


def read_bytes(uri: str) -> bytes:
    """The whole content of a (small) file: documents, lexicons, manifests."""
    with open_input(uri) as fh:
        try:
            return fh.read()
        except OSError as exc:
            raise read_error(uri, exc) from exc


@contextlib.contextmanager
def local_copy(uri: str, suffix: str = "", folder: str | Path | None = None) -> Iterator[str]:
    """A local path for ``uri``: the file itself, or a temp download streamed to disk
    (in ``folder``, else ``VOXFLOW_TMP_DIR`` or the system temp folder), removed afterwards."""
    fs, path = resolve(uri)
    if is_local(fs):
        yield path
        return
    where = folder or os.environ.get("VOXFLOW_TMP_DIR")
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="voxflow-src-", dir=where)
    os.close(fd)
    try:
        try:
            fs.get_file(path, tmp)
        except OSError as exc:
            raise read_error(uri, exc) from exc
        yield tmp
    finally:
        Path(tmp).unlink(missing_ok=True)


NAME_MAX = 255  # bytes in one file name (Linux, macOS, most file systems)


def temp_name(name: str) -> str:
    """A hidden temporary name next to ``name``, never longer than NAME_MAX bytes (the name's
    bytes cut short if need be: any bytes but '/' and NUL make a valid name)."""
    tag = f".{uuid.uuid4().hex[:8]}.tmp"
    return "." + os.fsdecode(os.fsencode(name)[: NAME_MAX - 1 - len(tag)]) + tag


def write_local_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise output_error(path, exc) from exc
