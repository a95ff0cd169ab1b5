"""``--notify URL``: POST a run's summary as JSON (Slack-compatible ``text`` included) when the
run had failures or was aborted. A failed POST is a warning, never a failed run; the URL is
only ever shown without its user:password and query (where webhook secrets live)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from voxflow.errors import ConfigError

Command = Literal["transcribe", "narrate"]
MAX_FAILURES = 50  # a payload stays small however many files failed
log = logging.getLogger("voxflow.notify")


def safe_url(url: str) -> str:
    """``url`` without user:password, query or fragment: fit for a message or a log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def should_notify(summary: dict[str, Any], always: bool) -> bool:
    """Every run with ``always``; otherwise runs with failures, aborted or interrupted."""
    return always or any(bool(summary.get(k)) for k in ("failed", "aborted", "interrupted"))


def payload(command: Command, summary: dict[str, Any]) -> dict[str, Any]:
    """The JSON sent: run id, counts, failures, cost, manifest path and a one-paragraph ``text``."""
    failures = list(summary.get("failures") or [])
    status = "aborted" if summary.get("aborted") else "interrupted" if summary.get("interrupted") else None
    status = status or ("failed" if summary.get("failed") else "ok")
    counts = {k: summary.get(k, 0) for k in ("done", "failed", "skipped", "restored") if k in summary}
    counts["known_failures"] = len(summary.get("known_failures") or [])
    return {
        "source": "voxflow",
        "command": command,
        "host": socket.gethostname(),
        "run_id": summary.get("run_id"),
        "status": status,
        "counts": counts,
        "failures": failures[:MAX_FAILURES],
        "aborted": summary.get("aborted"),
        "cost_usd": summary.get("cost_usd", 0.0),
        "manifest": summary.get("manifest"),
        "text": summary_text(command, status, summary, failures),
    }


def summary_text(command: Command, status: str, summary: dict[str, Any], failures: list[dict[str, Any]]) -> str:
    """One paragraph a person reads in a chat channel."""
    text = (
        f"voxflow {command} run {summary.get('run_id')} on {socket.gethostname()}: {status}. "
        f"{summary.get('done', 0)} done, {summary.get('failed', 0)} failed, {summary.get('skipped', 0)} skipped; "
        f"cost ${summary.get('cost_usd') or 0:.4f}."
    )
    if summary.get("aborted"):
        text += f" Aborted: {summary['aborted']}."
    if failures:
        shown = "; ".join(f"{f.get('file')} ({f.get('kind')})" for f in failures[:5])
        more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
        text += f" Failed: {shown}{more}."
    if summary.get("manifest"):
        text += f" Manifest: {summary['manifest']}"
    return text


def send(url: str, body: dict[str, Any], timeout_s: float = 10.0) -> str | None:
    """POST ``body`` to ``url``; None when it was accepted, else a one-line warning (the URL
    shown without credentials)."""
    import httpx

    try:
        answer = httpx.post(url, json=body, timeout=timeout_s, follow_redirects=False)
    except (httpx.HTTPError, ValueError) as exc:  # the error text may quote the full URL: only its type
        return f"notification to {safe_url(url)} failed ({type(exc).__name__}); the run itself is unaffected"
    if answer.status_code >= 300:
        return f"notification to {safe_url(url)} answered HTTP {answer.status_code}; the run itself is unaffected"
    return None


def notifier(
    command: Command, url: str | None, always: bool, warn: Callable[[str], None]
) -> Callable[[dict[str, Any]], None]:
    """What the CLI calls with a run's summary: sends it when it should, warns when that fails.
    A URL that can never work is refused before any work (ConfigError)."""
    if url and urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError(f"--notify (VOXFLOW_NOTIFY_URL) must be an http:// or https:// URL, got {safe_url(url)!r}")

    def on_summary(summary: dict[str, Any]) -> None:
        if not url or not should_notify(summary, always):
            return
        if problem := send(url, payload(command, summary)):
            warn(problem)

    return on_summary
