"""The ``narrate`` command's front end: plan, dry run, run the flow, print the books."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from voxflow import interrupts, progress
from voxflow.cli.common import report_error
from voxflow.cli.progress import plural
from voxflow.errors import ConfigError, RunAbort, SourceError, VoxflowError
from voxflow.fsnames import one_line, printable_name
from voxflow.narrate.corpus import scan_documents
from voxflow.narrate.options import NarrationOptions, parse_formats, validate_narration
from voxflow.narrate.plan import plan_document, plan_narration
from voxflow.narrate.run import run_inline
from voxflow.settings import Settings


def run_narrate(
    source: str,
    settings: Settings,
    *,
    dry_run: bool = False,
    per_chapter: bool = True,
    fmt: str = "mp3",
    instructions: str | None = None,
    speed: float | None = None,
    options: NarrationOptions | None = None,
    run_flow: Callable[[str, Settings, NarrationOptions], dict[str, Any]] | None = None,
    echo: Callable[[str], None] | None = None,
    on_summary: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """``voxflow narrate``: plan, run (through the Prefect flow only when there is work),
    print a summary; returns the exit code of design §3."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    say = echo or console.print
    try:
        options = options or NarrationOptions(
            per_chapter=per_chapter,
            formats=parse_formats(fmt),
            instructions=instructions,
            speed=speed,
        )
        if dry_run:
            return _dry_run(source, settings, options, console, say)
        started = time.monotonic()
        plan = plan_narration(source, settings, options)
        if plan.found == 0:
            say(f"no documents (.txt, .md, .epub) found in {source} ({plan.ignored} other files)")
            return 0
        say(
            f"found {plural(plan.found, 'document')}: {len(plan.todo)} to narrate, "
            f"{len(plan.skipped)} unchanged (skipped); model {plan.model}"
        )
        if plan.has_work and run_flow:  # the CLI's Prefect flow; a no-op rerun never pays its start-up
            summary = _run_with_progress(lambda: run_flow(source, settings, options), len(plan.todo))
        else:
            summary = run_inline(plan).as_dict()
    except interrupts.Interrupted:
        say("interrupted before any document started")
        return interrupts.INTERRUPTED_EXIT
    except (RunAbort, ConfigError, SourceError) as exc:
        if on_summary and isinstance(exc, RunAbort):
            on_summary({"aborted": f"{exc.kind}: {exc}"})
        return report_error(exc)  # one line on stderr, whatever the terminal's width
    _print_summary(summary, console, time.monotonic() - started)
    if on_summary:  # e.g. the CLI's --notify
        on_summary(summary)
    return int(summary["exit_code"])


def _run_with_progress(run: Callable[[], dict[str, Any]], books: int) -> dict[str, Any]:
    """``run()`` with a bar over its chunks on a terminal and a line per finished book."""
    import os

    from rich.console import Console

    from voxflow.cli.progress import NarrationProgress

    console = Console(highlight=False, soft_wrap=True)
    with NarrationProgress(books, console, force_bar=os.environ.get("VOXFLOW_PROGRESS") == "1") as bar:
        unsubscribe = [progress.subscribe(bar.on_event), progress.subscribe(print_documents(bar.bar.console))]
        try:
            return run()
        finally:
            for stop in unsubscribe:
                stop()


def print_documents(console: Any = None) -> Callable[[str, dict[str, Any]], None]:
    from rich.console import Console

    console = console or Console(highlight=False, soft_wrap=True)

    def listener(event: str, data: dict[str, Any]) -> None:
        if event == "narration.finished":
            rows = data.get("rows") or []
            if not rows:  # the run was asked to stop before this book was written
                console.print(one_line(f"- {data.get('document')}: interrupted, left for the next run"), markup=False)
                return
            head = rows[0]
            mark = {"done": "✓", "skipped": "·", "failed": "✗"}.get(head.get("status", ""), "?")
            detail = head.get("error_message") or plural(len(rows), "chapter")
            console.print(one_line(f"{mark} {data.get('document')}: {detail}"), markup=False)

    return listener


def _print_summary(summary: Mapping[str, Any], console: Any, wall_s: float) -> None:
    from rich.table import Table

    table = Table(title=f"narration run {summary['run_id']}", show_header=True)
    for column in ("document", "status", "chapters", "minutes", "ACX", "cost $"):
        table.add_column(column)
    for book in summary["books"]:
        acx = {True: "pass", False: "FAIL", None: "-"}[book.get("mastering_passed")]
        table.add_row(
            book["file"],
            book["status"],
            str(book["chapters"]),
            f"{book['duration_s'] / 60:.1f}",
            acx,
            f"{book['cost_usd']:.4f}",
        )
    if summary["books"]:  # none when interrupted before the first book was written
        console.print(table)
    console.print(
        f"{summary['done']} done, {summary['skipped']} skipped, {summary['failed']} failed; "
        f"{summary['audio_s'] / 60:.1f} min of audio, ${summary['cost_usd']:.4f}, "
        f"{wall_s:.1f} s; manifest {summary['manifest']}"
    )
    for failure in summary["failures"]:
        console.print(one_line(f"✗ {failure['kind']}: {failure['message']}"), markup=False, highlight=False)
    if summary.get("aborted"):
        console.print(one_line(f"aborted: {summary['aborted']}"), markup=False, highlight=False)
    if summary.get("interrupted"):
        console.print(
            f"interrupted: {summary.get('left_undone', 0)} documents left for the next run "
            "(run the same command again to resume; synthesised chunks are reused)"
        )


def _dry_run(
    source: str,
    settings: Settings,
    options: NarrationOptions,
    console: Any,
    say: Callable[[str], None],
) -> int:
    from rich.table import Table

    validate_narration(settings, options)
    docs, ignored = scan_documents(source, exclude=settings.out, follow_symlinks=settings.follow_symlinks)
    pricing = _speech_pricing(settings)
    model = settings.speech_model
    plans = [
        plan_document(d.uri, settings, options=options, rel_path=printable_name(d.rel_path), pricing=pricing)
        for d in docs
    ]
    table = Table(title=f"narration plan ({model})")
    for column in ("document", "chapters", "characters", "words", "chunks", "est. minutes", "est. cost $"):
        table.add_column(column)
    for p in plans:
        cost = p.costs.get(model)
        table.add_row(
            p.rel_path,
            "-" if p.error else str(len(p.chapters)),
            str(p.n_chars),
            str(p.n_words),
            str(p.n_chunks),
            f"{p.minutes:.1f}",
            "unknown" if cost is None else f"{cost:.4f}",
        )
    console.print(table)
    for p in plans:
        if p.error:
            say(f"✗ {p.rel_path}: {p.error}")
            continue
        say(f"{p.rel_path}: {p.title}" + (f" — {p.author}" if p.author else ""))
        for ch in p.chapters:
            say(f"   {ch.index + 1:>3}. {ch.title} ({ch.n_chars} chars, ≈ {ch.minutes:.1f} min)")
    totals: dict[str, float] = {}
    unknown: set[str] = set()
    for p in plans:
        for name, cost in p.costs.items():
            if cost is None:
                unknown.add(name)
            else:
                totals[name] = totals.get(name, 0.0) + cost
    say(
        f"{len(docs)} documents ({ignored} other files), "
        f"{sum(p.n_chars for p in plans)} characters, ≈ {sum(p.minutes for p in plans):.1f} min"
    )
    for name in sorted(totals, key=lambda n: (n != model, totals[n])):
        say(f"  {name}: ≈ ${totals[name]:.4f}" + ("   ← this run" if name == model else ""))
    if model in unknown:
        say(f"  {model}: cost unknown (no pricing: set OPENROUTER_API_KEY to fetch it)")
    cap = settings.budget_usd
    if cap is not None and totals.get(model, 0.0) > cap:
        say(f"  the estimate exceeds --budget-usd {cap:g}: a run stops starting work at the cap")
    return 0


def _speech_pricing(settings: Settings) -> dict[str, Mapping[str, Any] | None]:
    """model → pricing from ``GET /models?output_modalities=speech`` (only with a key: a dry
    run offline must not wait on the network)."""
    if not settings.openrouter.has_key:
        return {}
    try:
        from voxflow.engines.openrouter import list_models

        models = asyncio.run(list_models(settings, "speech"))
    except (VoxflowError, ImportError):
        return {}
    return {m["id"]: m.get("pricing") if isinstance(m.get("pricing"), dict) else None for m in models}
