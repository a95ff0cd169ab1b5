"""Listing, reading and writing local paths and buckets, all through fsspec.

A source is a local directory or file, or any fsspec URL (``s3://bucket/prefix``,
``file:///…``). Outputs go through :class:`OutputTree`, which writes every file under a
temporary name and renames it into place (object stores: one PUT, which is atomic).

Buckets: ``s3://`` goes through s3fs/botocore, so the standard AWS settings apply
(``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
``AWS_PROFILE`` and the shared config/credentials files); ``VOXFLOW_S3_*`` overrides them
(see :class:`S3Settings`). Listings are never cached between calls: every scan sees the
bucket as it is now.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple

import fsspec
from fsspec.core import url_to_fs
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from voxflow.errors import AudioError, ConfigError, SourceError, VoxflowError, output_error
from voxflow.media import looks_like_media, probe
from voxflow.models import Recording

HASH_BLOCK = 1 << 20
# What voxflow itself writes under ``--out``: never scanned when ``--out`` is the source or holds it.
OUTPUT_FOLDERS = ("catalog", "runs", "audiobooks", ".voxflow")
REMOTE_BLOCK = 8 << 20  # one ranged GET per 8 MiB when hashing an object
# Object stores: an object appears whole (one PUT), so it never needs to settle.
OBJECT_STORES = frozenset(["s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"])
S3_PROTOCOLS = ("s3://", "s3a://")
# Extensions that are never media: not even sniffed.
NOT_MEDIA = frozenset(
    [
        "txt",
        "md",
        "json",
        "srt",
        "vtt",
        "ass",
        "ssa",
        "sub",
        "parquet",
        "csv",
        "tsv",
        "pdf",
        "doc",
        "docx",
        "epub",
        "html",
        "htm",
        "xml",
        "yml",
        "yaml",
        "jpg",
        "jpeg",
        "png",
        "gif",
        "webp",
        "bmp",
        "tif",
        "tiff",
        "svg",
        "py",
        "sh",
        "log",
        "zip",
        "gz",
        "tar",
        "nfo",
        "db",
        "sqlite",
        "lock",
        "m3u",
    ]
)


# --- buckets ------------------------------------------------------------------------------


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


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _inside(path: str, folder: str | None) -> bool:
    return bool(folder) and (path == folder or path.startswith(folder.rstrip("/") + "/"))


def under(uri: str, root_uri: str) -> bool:
    """True when ``uri`` is ``root_uri`` or inside it (plain string prefix on '/')."""
    return uri == root_uri or uri.startswith(root_uri.rstrip("/") + "/")


# --- listing ------------------------------------------------------------------------------


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


class Skipped(NamedTuple):
    """A path the listing left out without opening it, and why."""

    rel_path: str
    reason: SkipReason


@dataclass(frozen=True, slots=True, eq=False)
class SourceFile:
    """One file of a listing: where it is and which version of it we saw."""

    path: str  # the filesystem's own path (no protocol)
    uri: str  # what a user can paste back
    rel_path: str  # relative to the listed root, '/'-separated
    size_bytes: int
    mtime: float
    version: Any  # ETag on object stores, mtime on file systems: what the hash cache keys on


@dataclass(frozen=True, slots=True, eq=False)
class Listing:
    """Every file under a source, listed once (one paginated LIST on a bucket)."""

    fs: fsspec.AbstractFileSystem
    root: str  # the listed path; for a single file, its folder
    root_uri: str
    single_file: bool
    files: tuple[SourceFile, ...]  # regular files sorted by path; hidden and excluded files left out
    left_out: int  # hidden or voxflow's own outputs
    paths: frozenset[str]  # every file path listed, hidden and excluded ones included
    skipped: tuple[Skipped, ...] = ()  # special files and symlinks never opened, with the reason

    def paths_under(self, fs: fsspec.AbstractFileSystem, root: str) -> set[str] | None:
        """The listed paths under ``root`` of ``fs`` if this listing covers it, else None."""
        if fs is not self.fs or self.single_file or not _inside(root.rstrip("/"), self.root.rstrip("/")):
            return None
        prefix = root.rstrip("/") + "/"
        return {p for p in self.paths if p.startswith(prefix)}


def list_source(source: str, *, exclude: str | None = None, follow_symlinks: bool = False) -> Listing:
    """Every regular file under ``source`` (a folder or prefix, recursively, or one file), sorted.

    Hidden files and folders and voxflow's own outputs under ``exclude`` (the output folder)
    are left out. Locally only regular files are listed: FIFOs, sockets, devices, broken or
    looping symlinks and, unless ``follow_symlinks``, symlinks leading out of the source are
    in ``skipped`` with the reason, never opened. Raises ConfigError for an empty ``source``,
    SourceError when it does not exist or cannot be listed. Used for recordings
    (:func:`scan`) and documents alike.
    """
    if not source.strip():
        raise ConfigError("SOURCE is empty: give a folder, file or s3:// URL")
    fs, root = resolve(source)
    try:
        entries, single, special = _list(fs, root, follow_symlinks)
    except FileNotFoundError as exc:
        raise SourceError(f"source does not exist: {source}") from exc
    except (OSError, PermissionError) as exc:
        raise SourceError(f"cannot list {source}: {exc}") from exc
    base = root.rsplit("/", 1)[0] if single else root.rstrip("/")
    outputs = tuple(p + "/" for p in _own_outputs(root, exclude))
    remote = is_object_store(fs)
    files, left_out, paths = [], 0, set()
    for path, info in sorted(entries.items()):
        if info.get("type") == "directory" or path.endswith("/"):
            continue
        paths.add(path)
        rel = path[len(base) :].lstrip("/")
        if _hidden(rel) or (outputs and path.startswith(outputs)):
            left_out += 1
            continue
        mtime = _mtime(info)
        version = (info.get("ETag") or info.get("etag") or mtime) if remote else mtime
        files.append(SourceFile(path, full_uri(fs, path), rel, int(info.get("size") or 0), mtime, version))
    skipped = tuple(
        Skipped(rel, why)
        for path, why in sorted(special)
        if not _hidden(rel := path[len(base) :].lstrip("/")) and not (outputs and path.startswith(outputs))
    )
    return Listing(fs, base, full_uri(fs, base), single, tuple(files), left_out, frozenset(paths), skipped)


def _own_outputs(root: str, exclude: str | None) -> tuple[str, ...]:
    """Folders under ``root`` that hold voxflow's outputs: the whole output folder when it is
    inside the source; when it is the source or holds it, only its own subfolders."""
    if not exclude:
        return ()
    out, root = resolve(exclude)[1].rstrip("/"), root.rstrip("/")
    if _inside(out, root) and out != root:
        return (out,)
    subfolders = (f"{out}/{name}" for name in OUTPUT_FOLDERS)
    return tuple(p for p in subfolders if _inside(p, root) and p != root)


Entries = dict[str, dict[str, Any]]
Special = list[tuple[str, SkipReason]]


def _list(fs: fsspec.AbstractFileSystem, root: str, follow_symlinks: bool) -> tuple[Entries, bool, Special]:
    """(path → info, whether ``root`` is a single file, special paths left out)."""
    if is_local(fs):
        mode = os.stat(root).st_mode  # FileNotFoundError: no such source
        if stat.S_ISDIR(mode):
            found, special = _walk_local(root, with_stat=True, follow_symlinks=follow_symlinks)
            return found, False, special
        if not stat.S_ISREG(mode):
            raise SourceError(f"{root} is a {_special_reason(mode)}, not a regular file or folder: not read")
        return {root: fs.info(root)}, True, []
    # A bucket: one paginated listing; s3fs answers a key that is an object with that object.
    entries = fs.find(root, detail=True, withdirs=False)
    if set(entries) == {root.rstrip("/")}:
        return entries, True, []
    if not entries and not fs.exists(root):
        raise FileNotFoundError(root)
    return entries, False, []


def _walk_local(root: str, *, with_stat: bool, follow_symlinks: bool = True) -> tuple[Entries, Special]:
    """Regular files under a local folder, with os.scandir (one stat per file, none without
    ``with_stat``; about 3× faster than fsspec's walk), and the special paths left out unopened.

    Folders reached without symlinks are listed first, so a symlinked alias of one of them
    (or a loop back to the root) is "folder already listed"; without ``follow_symlinks`` a
    symlink whose target is outside ``root`` (its real path) is not followed.
    """
    found: Entries = {}
    special: Special = []
    top = root.rstrip("/") or "/"
    real_top = os.path.realpath(top)
    folders, linked = [top], []  # linked: folders reached through a symlink, walked last
    visited: set[tuple[int, int]] = set()
    while folders or linked:
        folder = folders.pop() if folders else linked.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in visited:
                special.append((folder, "folder already listed"))
                continue
            visited.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError:
            if folder == top:
                raise
            special.append((folder, "unreadable folder"))  # fsspec's walk leaves it out too
            continue
        for entry in entries:
            try:
                if entry.is_symlink():
                    _visit_link(entry.path, real_top, follow_symlinks, with_stat, found, special, linked)
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    found[entry.path] = _file_info(entry.stat()) if with_stat else {}
                else:
                    special.append((entry.path, _special_reason(entry.stat(follow_symlinks=False).st_mode)))
            except OSError:
                continue  # vanished while listing
    return found, special


def _visit_link(
    path: str, real_top: str, follow: bool, with_stat: bool, found: Entries, special: Special, linked: list[str]
) -> None:
    """Sort one symlink: a file to list, a folder to walk later, or a special path with its reason."""
    try:
        st = os.stat(path)
    except OSError as exc:
        special.append((path, "symlink loop" if exc.errno == errno.ELOOP else "broken symlink"))
        return
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        special.append((path, _special_reason(st.st_mode)))
    elif not follow and not _inside(os.path.realpath(path), real_top):
        special.append((path, "symlink out of the source"))
    elif stat.S_ISDIR(st.st_mode):
        linked.append(path)
    else:
        found[path] = _file_info(st) if with_stat else {}


def _file_info(st: os.stat_result) -> dict[str, Any]:
    return {"size": st.st_size, "mtime": st.st_mtime, "type": "file"}


def _special_reason(mode: int) -> SkipReason:
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def find_paths(fs: fsspec.AbstractFileSystem, root: str) -> set[str]:
    """Every file path under ``root`` (empty if it does not exist), with one listing."""
    try:
        if is_local(fs):
            return set(_walk_local(root, with_stat=False)[0])
        return set(fs.find(root))
    except (FileNotFoundError, OSError):
        return set()


@dataclass(frozen=True, slots=True, eq=False)
class ScanResult:
    recordings: tuple[Recording, ...]  # settled media files, sorted by path
    ignored: int  # files that are not media (or hidden, or inside the output folder)
    unsettled: tuple[Recording, ...] = ()  # changed within the settle interval: next run
    versions: dict[str, Any] = field(default_factory=dict)  # uri → ETag or mtime
    listing: Listing | None = None
    skipped: tuple[Skipped, ...] = ()  # (rel_path, reason): special files and symlinks never opened


def scan(
    source: str, *, exclude: str | None = None, settle_seconds: float = 0.0, follow_symlinks: bool = False
) -> ScanResult:
    """Media files under ``source`` (a directory, recursively, or one file), sorted by path.

    Hidden files and folders and voxflow's outputs under ``exclude`` (the output folder) are
    left out; special files and symlinks out of the source are ``skipped`` (see
    :func:`list_source`). Media is recognised by extension or, for unknown extensions, by the
    first bytes. On file systems, a file modified less than ``settle_seconds`` ago may still be
    being copied: it is returned in ``unsettled`` instead. Bucket objects appear whole and
    never wait.
    """
    listing = list_source(source, exclude=exclude, follow_symlinks=follow_symlinks)
    settle = settle_seconds if settle_seconds and not is_object_store(listing.fs) else 0.0
    now = time.time()
    recordings, unsettled, versions, ignored = [], [], {}, listing.left_out
    for f in listing.files:
        if not _is_media(listing.fs, f.path, f.rel_path):
            ignored += 1
            continue
        rec = Recording(uri=f.uri, rel_path=f.rel_path, size_bytes=f.size_bytes, mtime=f.mtime)
        versions[f.uri] = f.version
        (unsettled if settle and now - f.mtime < settle else recordings).append(rec)
    return ScanResult(tuple(recordings), ignored, tuple(unsettled), versions, listing, listing.skipped)


def _is_media(fs: fsspec.AbstractFileSystem, path: str, rel: str) -> bool:
    ext = rel.rsplit(".", 1)[-1].lower() if "." in rel.rsplit("/", 1)[-1] else ""
    if ext in NOT_MEDIA:
        return False
    if looks_like_media(rel, b""):
        return True
    try:
        with _open_regular(path, path) if is_local(fs) else fs.open(path, "rb") as fh:
            return looks_like_media(rel, fh.read(16))
    except (OSError, SourceError):
        return False


def _mtime(info: dict[str, Any]) -> float:
    value = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or 0
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


# --- reading ------------------------------------------------------------------------------


@contextlib.contextmanager
def open_input(uri: str, *, cache_type: str = "readahead") -> Iterator[Any]:
    """A binary file object for ``uri`` that streams: ranged GETs of 8 MiB on a bucket,
    never the whole object in memory. Failing to open it raises SourceError."""
    fs, path = resolve(uri)
    if is_local(fs):
        with _open_regular(path, uri) as fh:
            yield fh
        return
    try:
        fh = fs.open(path, "rb", block_size=REMOTE_BLOCK, cache_type=cache_type)
    except OSError as exc:
        raise _read_error(uri, exc) from exc
    with fh:
        yield fh


@contextlib.contextmanager
def _open_regular(path: str, uri: str) -> Iterator[BinaryIO]:
    """A local file opened for reading only if it is a regular file: a FIFO, socket or device
    (also behind a symlink) is refused with SourceError before it is opened, so it can neither
    block nor stream forever."""
    try:
        _require_regular(uri, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)  # never waits for a writer
    except OSError as exc:
        raise _read_error(uri, exc) from exc
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
        raise SourceError(f"cannot read {uri}: it is a {_special_reason(mode)}, not a regular file")


def _read_error(uri: str, exc: BaseException) -> SourceError:
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
            raise _read_error(uri, exc) from exc


def content_hash(uri: str, size: int | None = None, *, media: bool = False) -> str:
    """sha256 of a file's bytes, streamed in blocks (1 MiB locally, 8 MiB from a bucket).

    An object whose listed ``size`` fits in one block is fetched with a single GET (no HEAD).
    Only regular files are read (SourceError otherwise). With ``media``, the first block is
    checked before the rest is read (:func:`check_media_head`): a file that is not audio or
    video raises AudioError instead of being read end to end.
    """
    fs, path = resolve(uri) if "://" in uri else (None, uri)
    if fs is None or is_local(fs):
        with _open_regular(path, uri) as fh:
            return _digest(fh, HASH_BLOCK, uri, path if media else None)
    if size is not None and size <= REMOTE_BLOCK:
        try:
            data = fs.cat_file(path)
        except OSError as exc:
            raise _read_error(uri, exc) from exc
        if media:
            check_media_head(data[:HASH_BLOCK], None)
        return hashlib.sha256(data).hexdigest()
    with open_input(uri, cache_type="none") as fh:  # one GET per block, nothing kept
        return _digest(fh, REMOTE_BLOCK, uri, "" if media else None)


def _digest(fh: BinaryIO, block: int, uri: str, media_path: str | None) -> str:
    """sha256 of ``fh``; when ``media_path`` is not None ("" for a remote object), the first
    block must pass :func:`check_media_head` before another byte is read."""
    digest = hashlib.sha256()
    try:
        chunk = fh.read(block)
        if media_path is not None:
            check_media_head(chunk, media_path or None)
        while chunk:
            digest.update(chunk)
            chunk = fh.read(block)
    except OSError as exc:
        raise _read_error(uri, exc) from exc
    return digest.hexdigest()


def check_media_head(head: bytes, local_path: str | None) -> None:
    """Raise AudioError unless a file starting with ``head`` can be audio or video.

    Cheap checks first: a known container header passes; a head of nothing but zero bytes (a
    sparse or blanked file) fails. Anything else is for ffprobe to judge (locally; reading
    about a megabyte), with the verdict the transcription would give. An empty file passes:
    the transcription names it.
    """
    if not head or looks_like_media("", head[:16]):
        return
    if head.count(0) == len(head):
        raise AudioError(f"not an audio/video file: its first {len(head):,} bytes are all zero")
    if local_path is not None:
        probe(local_path)


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
            raise _read_error(uri, exc) from exc
        yield tmp
    finally:
        Path(tmp).unlink(missing_ok=True)


# --- the hash cache -------------------------------------------------------------------------


class HashCache:
    """Remembers uri → (size, version, content hash), so unchanged files are not re-read.

    The version is the file's mtime on file systems and its ETag on buckets. ``HashCache(path)``
    keeps one local JSON file; :meth:`in_tree` keeps one file per writer inside the output
    tree (``.voxflow/hashes/<source>-<writer>.json``, in the bucket for bucket outputs) and
    reads every writer's file, so a fresh machine or container, or another shard, starts warm.
    Saving keeps only the files seen in this run, and writes nothing when nothing changed.
    With ``media``, a file that is not audio or video raises AudioError before it is read
    end to end (see :func:`content_hash`).
    """

    def __init__(self, path: Path | None = None, *, media: bool = False) -> None:
        self.path = path
        self.media = media
        self._tree: OutputTree | None = None
        self._rel = ""
        self._entries: dict[str, list[Any]] = {}
        self._own: dict[str, list[Any]] = {}
        self._seen: dict[str, list[Any]] = {}
        self._prefetched: dict[str, str | VoxflowError] = {}  # digest, or why it cannot be read
        self.hashed_count = 0  # files actually read by this instance
        if path and path.exists():
            with contextlib.suppress(ValueError, OSError):
                self._own = _entries(json.loads(path.read_text()))
                self._entries = dict(self._own)

    @classmethod
    def in_tree(cls, out: OutputTree, source: str, writer: str = "w0", *, media: bool = False) -> HashCache:
        """The cache of ``source``'s files, stored in ``out`` (see the class doc)."""
        fs, root = resolve(source)
        key = hashlib.sha256(os.fsencode(full_uri(fs, root))).hexdigest()[:12]
        cache = cls(None, media=media)
        cache._tree = out
        cache._rel = f".voxflow/hashes/{key}-{writer}.json"
        own_path = out.path(cache._rel)
        for path in out.glob(f".voxflow/hashes/{key}-*.json"):
            try:
                with out.fs.open(path, "rb") as fh:
                    loaded = _entries(json.loads(fh.read()))
            except (OSError, ValueError):
                continue
            if path == own_path:
                cache._own = loaded
            else:
                cache._entries.update(loaded)
        cache._entries.update(cache._own)
        return cache

    def hashed(self, rec: Recording, version: Any = None) -> Recording:
        """``rec`` with its recording_id, from the cache when size and version still match
        (``version`` defaults to the recording's mtime)."""
        version = rec.mtime if version is None else version
        known = self._entries.get(rec.uri)
        if known and known[0] == rec.size_bytes and known[1] == version:
            self._seen[rec.uri] = known
            return replace(rec, recording_id=known[2])
        digest = self._prefetched.pop(rec.uri, None) or content_hash(rec.uri, rec.size_bytes, media=self.media)
        if isinstance(digest, VoxflowError):
            raise digest
        self.hashed_count += 1
        entry = [rec.size_bytes, version, digest]
        self._entries[rec.uri] = self._seen[rec.uri] = entry
        return replace(rec, recording_id=digest)

    def prefetch(self, recordings: Iterable[Recording], versions: dict[str, Any], workers: int = 8) -> int:
        """Hash, ``workers`` at a time, the recordings the cache cannot answer (a bucket's GETs
        overlap instead of queueing); :meth:`hashed` then takes the results. Files that cannot
        be read are reported by :meth:`hashed`. Returns how many were hashed."""
        todo = []
        for rec in recordings:
            version = versions.get(rec.uri, rec.mtime)
            known = self._entries.get(rec.uri)
            if not (known and known[0] == rec.size_bytes and known[1] == version):
                todo.append(rec)
        if len(todo) < 2:
            return 0

        def one(rec: Recording) -> tuple[str, str | VoxflowError]:
            try:
                return rec.uri, content_hash(rec.uri, rec.size_bytes, media=self.media)
            except (SourceError, AudioError) as exc:
                return rec.uri, exc

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voxflow-hash") as pool:
            self._prefetched.update(pool.map(one, todo))
        return sum(isinstance(v, str) for v in self._prefetched.values())

    def known(self, uri: str) -> str | None:
        """The last known content hash of ``uri`` (whatever its version), or None."""
        entry = self._entries.get(uri)
        return entry[2] if entry else None

    def save(self) -> None:
        """Write this writer's entries (the files seen in this run) if they changed."""
        if self._seen == self._own:
            return
        data = json.dumps(self._seen, separators=(",", ":")).encode()
        if self._tree is not None:
            self._tree.write_bytes(self._rel, data)
        elif self.path:
            write_local_atomic(self.path, data)
        else:
            return
        self._own = dict(self._seen)


def _entries(data: Any) -> dict[str, list[Any]]:
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 3 and isinstance(v[2], str)}


# --- writing ------------------------------------------------------------------------------


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


class OutputTree:
    """A folder (local or bucket) that receives outputs, written atomically.

    Locally: a temp file in the same folder, renamed into place. On a bucket: one PUT (or one
    multipart upload, completed at the end), which readers see whole or not at all.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = resolve(url)
        self.local = is_local(self.fs)

    def path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}"

    def uri(self, rel: str) -> str:
        return full_uri(self.fs, self.path(rel))

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write ``rel`` atomically; returns its URI."""
        target = self.path(rel)
        if self.local:
            write_local_atomic(Path(target), data)
        else:
            try:
                self.fs.pipe_file(target, data)
            except OSError as exc:
                raise output_error(self.uri(rel), exc) from exc
        return self.uri(rel)

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode("utf-8"))

    def put_file(self, rel: str, local_path: str) -> str:
        """Move or upload a finished local file to ``rel`` (rename locally)."""
        target = self.path(rel)
        if self.local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            os.replace(local_path, target)
        else:
            try:
                self.fs.put_file(local_path, target)
            except OSError as exc:
                raise output_error(self.uri(rel), exc) from exc
        return self.uri(rel)

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.path(rel)))

    def read_text(self, rel: str) -> str:
        with self.fs.open(self.path(rel), "r", encoding="utf-8") as fh:
            return fh.read()

    def glob(self, pattern: str) -> list[str]:
        return sorted(self.fs.glob(self.path(pattern)))

    def find(self, rel: str = "") -> set[str]:
        """Every file path under ``rel`` (the whole tree by default), listed once."""
        return find_paths(self.fs, self.path(rel).rstrip("/") if rel else self.root)

    @classmethod
    def cached(cls, url: str) -> OutputTree:
        """The same as ``OutputTree(url)``, memoised (per working directory): planning asks
        for the sidecar tree of every recording."""
        return _cached_tree(url, os.getcwd() if "://" not in url else "")

    def state_dir(self) -> Path:
        """A local folder for caches and checkpoints of this output tree."""
        if self.local:
            return Path(self.root) / ".voxflow"
        key = hashlib.sha256(os.fsencode(self.url)).hexdigest()[:16]
        return Path(os.environ.get("VOXFLOW_STATE_DIR", Path.home() / ".cache/voxflow")) / key


@lru_cache(maxsize=4096)
def _cached_tree(url: str, cwd: str) -> OutputTree:
    return OutputTree(url)


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


__all__ = [
    "OUTPUT_FOLDERS",
    "HashCache",
    "Listing",
    "OutputTree",
    "S3Settings",
    "ScanResult",
    "Skipped",
    "SourceFile",
    "check_media_head",
    "content_hash",
    "find_paths",
    "full_uri",
    "is_local",
    "is_object_store",
    "list_source",
    "local_copy",
    "new_run_id",
    "open_input",
    "read_bytes",
    "resolve",
    "s3_storage_options",
    "scan",
    "under",
    "write_local_atomic",
]
