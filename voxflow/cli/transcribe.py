"""The ``transcribe`` command's front end: lock, plan, run the flow (or nothing), print."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table

from voxflow import interrupts
from voxflow import progress as events
from voxflow.cli.common import (
    check_beside_source,
    check_out,
    check_source,
    console,
    prefect_defaults,
    report_error,
    run_bound,
    say_engine,
    say_stopping,
    start_prefect_api,
    validate_chat_model,
    validate_model,
)
from voxflow.cli.progress import RunProgress, hms, plural
from voxflow.errors import ConfigError, RunAbort, SourceError
from voxflow.fsnames import one_line, printable_name
from voxflow.settings import Settings


def check_transcription(settings: Settings) -> None:
    """Refuse settings the transcription engine would ignore, before any work."""
    model = settings.transcription_model
    check_translation(settings)
    check_minutes(settings)
    if not model.startswith("local/"):
        return  # OpenRouter models: checked against GET /models when there is work
    if settings.diarize:
        raise ConfigError(
            f"--diarize needs an OpenRouter model that labels speakers; the offline engine {model} cannot "
            "(set OPENROUTER_API_KEY and pick one with `voxflow models`)"
        )
    if model.endswith(".en") and settings.language not in (None, "en"):
        raise ConfigError(
            f"--language {settings.language}: {model} understands English only; "
            "use a multilingual model (e.g. local/base) or leave --language out"
        )


def check_translation(settings: Settings) -> None:
    """Languages translated through OpenRouter chat need a key: refuse them before any work."""
    chat = settings.chat_targets
    if chat and not settings.openrouter.has_key:
        raise ConfigError(
            f"--translate-to {','.join(chat)}: translation into these languages goes through OpenRouter chat and "
            "needs OPENROUTER_API_KEY (offline translation is into English only, with a local/… model); "
            "export the key, or leave them out"
        )


def check_minutes(settings: Settings) -> None:
    """Minutes are written through OpenRouter chat: refuse --minutes without a key before any work."""
    if settings.minutes and not settings.openrouter.has_key:
        raise ConfigError(
            "--minutes: meeting minutes are written through OpenRouter chat and need OPENROUTER_API_KEY; "
            "export the key, or leave --minutes out"
        )


def run_transcribe(source: str, settings: Settings, notify: Callable[[dict[str, Any]], None] | None = None) -> int:
    """The transcribe command without typer: hold the output's lock, then plan, run, report.
    The first Ctrl-C or SIGTERM stops starting work (exit 130, see voxflow.interrupts)."""
    with interrupts.graceful_signals(say_stopping):
        return _transcribe_command(source, settings, notify)


def _transcribe_command(source: str, settings: Settings, notify: Callable[[dict[str, Any]], None] | None) -> int:
    from voxflow.io.outputs import new_run_id
    from voxflow.lock import OutputLocked, output_lock

    check_source(source)
    check_transcription(settings)
    if settings.beside_source:
        check_beside_source(source)
    check_out(settings.out)
    run_id = new_run_id()
    try:
        with output_lock(settings, run_id):
            return _transcribe_locked(source, settings, run_id, notify)
    except OutputLocked as exc:
        return report_error(exc)


def _transcribe_locked(
    source: str, settings: Settings, run_id: str, notify: Callable[[dict[str, Any]], None] | None
) -> int:
    """Plan, run (Prefect only if there is work), report."""
    from voxflow.transcribe import plan_run, run_inline

    started, started_at = time.monotonic(), time.time()  # the run's start: its manifest counts start-up
    try:
        plan = plan_run(source, settings)
    except SourceError as exc:
        return report_error(exc)
    if plan.found == 0:
        console.print(f"no media files found in {escape(one_line(source))} ({plan.ignored} other files ignored)")
        return 0
    if not settings.quiet:
        console.print(
            f"found {plural(plan.found, 'recording')}: {len(plan.todo) + len(plan.twins)} to transcribe"
            + (f" ({len(plan.twins)} identical to another: transcribed once)" if plan.twins else "")
            + f", {len(plan.skipped)} already done, {len(plan.restore)} to restore from the catalog"
            + (f", {len(plan.translate)} to translate from the catalog" if plan.translate else "")
            + (f", {len(plan.minutes)} to write minutes for from the catalog" if plan.minutes else "")
            + (f", {len(plan.failed)} refused before reading (the summary says why)" if plan.failed else "")
            + (f", {len(plan.unsettled)} still changing (next run)" if plan.unsettled else "")
            + (f"; {len(plan.deleted)} done earlier are gone from the source (rows kept)" if plan.deleted else "")
        )
        _say_passed_over(plan.passed_over)
    _say_known_failures(plan.known_failures)
    _say_subtitled(plan.subtitled, settings)
    try:
        if settings.chat_targets and (plan.has_work or plan.translate):
            validate_chat_model(settings, settings.translation_model, "--translation-model (VOXFLOW_TRANSLATION_MODEL)")
        if settings.minutes and (plan.has_work or plan.minutes):
            validate_chat_model(settings, settings.minutes_model, "--minutes-model (VOXFLOW_MINUTES_MODEL)")
        if not plan.has_work:
            summary = run_inline(plan, run_id, started_at).as_dict()
        else:
            get_ready(settings)
            validate_model(settings)
            if not settings.quiet:  # refusals come first: this line only when work starts
                say_engine(settings.transcription_model, settings.openrouter.has_key)
                if settings.chat_targets:
                    targets = ", ".join(settings.chat_targets)
                    model = escape(one_line(settings.translation_model))
                    console.print(f"translation: OpenRouter [bold]{model}[/] → {targets}")
                if settings.minutes:
                    console.print(f"minutes: OpenRouter [bold]{escape(one_line(settings.minutes_model))}[/]")
            if interrupts.requested():
                raise interrupts.Interrupted("stopped during start-up: nothing started")
            recordings = len(plan.todo) + len(plan.twins) + len(plan.restore)  # each gets its "finished"
            summary = _run_transcription_flow(source, settings, recordings, run_id, started_at)
    except interrupts.Interrupted:
        console.print("[yellow]interrupted[/] before any recording started")
        return interrupts.INTERRUPTED_EXIT
    except (RunAbort, ConfigError) as exc:
        if notify and isinstance(exc, RunAbort):  # stopped before the run could write a manifest
            notify({"aborted": f"{exc.kind}: {exc}"})
        return report_error(exc)
    print_summary(summary, settings, time.monotonic() - started)
    if notify:
        notify(summary)
    return int(summary["exit_code"])


def _say_subtitled(subtitled: list[Any], settings: Settings) -> None:
    """One line for recordings left alone because their subtitles are already there."""
    if subtitled:
        wanted = ",".join(code for code in (settings.language, *settings.translate_to) if code)
        console.print(
            f"{len(subtitled)} already have {wanted} subtitles beside or inside them, not transcribed "
            "(--force to do them; runs/<run_id>.json lists them)",
            markup=False,
            highlight=False,
        )


def _say_known_failures(known: list[Any]) -> None:
    """One line for recordings that failed for good earlier and have not changed."""
    if known:
        runs = ", ".join(sorted({k.since_run for k in known}))
        console.print(
            f"{len(known)} known failures (unchanged since run {runs}; --retry-failed to try again)",
            markup=False,
            highlight=False,
        )


def _say_passed_over(passed_over: Sequence[Any], shown: int = 5) -> None:
    """The paths the scan never opened (special files, symlinks out of the source), and why."""
    if not passed_over:
        return
    console.print(f"{len(passed_over)} paths passed over without being opened:")
    for entry in passed_over[:shown]:
        console.print(f"  {printable_name(entry.rel_path)} — {entry.reason}", markup=False, highlight=False)
    if len(passed_over) > shown:
        console.print(f"  … and {len(passed_over) - shown} more (runs/<run_id>.json lists them all)")


def _run_transcription_flow(
    source: str, settings: Settings, total: int, run_id: str | None = None, started_at: float | None = None
) -> dict[str, Any]:
    prefect_defaults()
    from flows.transcribe import transcribe_flow

    flow = transcribe_flow
    options = settings.public_dict()
    options.pop("out")
    with RunProgress(
        total, console, quiet=settings.quiet, force_bar=os.environ.get("VOXFLOW_PROGRESS") == "1"
    ) as shown:
        unsubscribe = events.subscribe(shown.on_event)
        try:
            return run_bound(
                lambda: flow(source=source, out=settings.out, options=options, run_id=run_id, started_at=started_at)
            )
        finally:
            unsubscribe()


def _translations_row(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary's translations line, when the run made or failed any."""
    done, failed = summary.get("translated", 0), summary.get("translations_failed", 0)
    if not (done or failed):
        return []
    return [("translations", f"{done} written" + (f", {failed} failed (no sidecars)" if failed else ""))]


def _minutes_row(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The summary's minutes line, when the run wrote or failed any."""
    done, failed = summary.get("minutes", 0), summary.get("minutes_failed", 0)
    if not (done or failed):
        return []
    return [("minutes", f"{done} written" + (f", {failed} failed (no file)" if failed else ""))]


def get_ready(settings: Settings) -> None:
    """Once there is work: the engine process starts loading the model, and the Prefect API is
    found or started on its own thread, while this thread checks the model and imports the flow."""
    from voxflow.engines.base import get_transcriber, is_local

    if is_local(settings.transcription_model):
        get_transcriber(settings).warm_up()
    start_prefect_api()


def print_summary(summary: dict[str, Any], settings: Settings, wall_s: float) -> None:
    table = Table(title=f"run {summary['run_id']}", show_header=False)
    rows = [
        ("done", summary["done"]),
        ("restored from catalog", summary["restored"]),
        ("skipped (already done)", summary["skipped"]),
        ("failed", summary["failed"]),
        ("waiting to settle", summary["unsettled"]),
        ("gone from source (rows kept)", summary.get("deleted", 0)),
        *_translations_row(summary),
        *_minutes_row(summary),
        ("audio", hms(summary["audio_s"])),
        ("cost", f"${summary['cost_usd']:.4f}"),
        ("wall time", f"{wall_s:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    for failure in summary["failures"]:  # names are the user's: no markup, one line each
        console.print(f"[red]✗[/] {escape(one_line(failure['kind'] + ': ' + failure['message']))}")
    for note in summary.get("left_alone", []):
        console.print(f"[yellow]![/] {escape(one_line(note))}")
    if summary.get("aborted"):
        console.print(f"[red]aborted:[/] {escape(one_line(summary['aborted']))}")
    if summary.get("interrupted"):
        console.print(
            f"[yellow]interrupted:[/] {plural(summary.get('left_undone', 0), 'recording')} left for the next run "
            "(run the same command again to resume)"
        )
    where = "beside each recording" if settings.beside_source else settings.out
    console.print(
        escape(one_line(f"outputs: {where}   catalog: {settings.out}/catalog   manifest: {summary['manifest']}"))
    )
