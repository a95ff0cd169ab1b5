"""``voxflow …``: the command line (typer + rich). Each command runs a Prefect flow or reads
the catalog; exit codes: 0 done, 1 some items failed, 2 usage/config error, 3 run aborted."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from voxflow import progress as events
from voxflow.errors import ConfigError, RunAbort, SourceError, VoxflowError
from voxflow.settings import Settings, load_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="voxflow: transcribe recordings into transcripts, subtitles and Parquet; narrate "
    "documents into audiobooks. Offline by default; OpenRouter when OPENROUTER_API_KEY is set.",
)
console = Console(stderr=True)
out_console = Console()

OutOpt = Annotated[str | None, typer.Option("--out", "-o", help="Output folder or bucket URL.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model id (local/… or an OpenRouter id).")]
ConcurrencyOpt = Annotated[int | None, typer.Option(help="Engine requests in flight (whole run).")]
BudgetOpt = Annotated[float | None, typer.Option("--budget-usd", help="Stop starting work past this cost.")]


def _prefect_defaults() -> None:
    """Quiet, patient ephemeral Prefect unless the user configured otherwise."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")


def _settings(**flags: Any) -> Settings:
    try:
        return load_settings(**flags)
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


def _say_engine(model: str, has_key: bool) -> None:
    if model.startswith("local/"):
        why = "" if has_key else " (no OPENROUTER_API_KEY set)"
        console.print(f"engine: embedded offline [bold]{model}[/]{why}")
    else:
        console.print(f"engine: OpenRouter [bold]{model}[/]")


@app.command()
def transcribe(
    source: Annotated[str, typer.Argument(help="Folder, file, or bucket URL (s3://…).")],
    out: OutOpt = None,
    model: ModelOpt = None,
    language: Annotated[str | None, typer.Option(help="ISO-639-1 hint, e.g. en.")] = None,
    formats: Annotated[str | None, typer.Option(help="Sidecars: any of srt,vtt,txt,json.")] = None,
    concurrency: ConcurrencyOpt = None,
    budget_usd: BudgetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Redo recordings already done.")] = False,
    beside_source: Annotated[
        bool,
        typer.Option("--beside-source", help="Write sidecars next to each recording (media-library mode)."),
    ] = False,
    settle_seconds: Annotated[
        float | None, typer.Option(help="Leave files changed this recently for the next run.")
    ] = None,
    diarize: Annotated[bool, typer.Option("--diarize", help="Speaker labels (models that support it).")] = False,
    keyterms: Annotated[str | None, typer.Option(help="Comma-separated vocabulary hints.")] = None,
    shard: Annotated[str | None, typer.Option(help="i/n: this worker's share of the recordings.")] = None,
) -> None:
    """Transcribe every new recording under SOURCE: transcripts, subtitles, Parquet."""
    settings = _settings(
        out=out,
        model=model,
        language=language,
        formats=formats,
        concurrency=concurrency,
        budget_usd=budget_usd,
        force=force or None,
        beside_source=beside_source or None,
        settle_seconds=settle_seconds,
        diarize=diarize or None,
        keyterms=keyterms,
        shard=shard,
    )
    raise typer.Exit(run_transcribe(source, settings))


def run_transcribe(source: str, settings: Settings) -> int:
    """The transcribe command without typer: plan, run (Prefect only if there is work), report."""
    from voxflow.transcription import plan_run, run_inline

    started = time.monotonic()
    _say_engine(settings.transcription_model, settings.openrouter.has_key)
    try:
        plan = plan_run(source, settings)
    except SourceError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    if plan.found == 0:
        console.print(f"no media files found in {source} ({plan.ignored} other files ignored)")
        return 0
    console.print(
        f"found {plan.found} recordings: {len(plan.todo)} to transcribe, "
        f"{len(plan.skipped)} already done, {len(plan.restore)} to restore from the catalog"
        + (f", {len(plan.unsettled)} still changing (next run)" if plan.unsettled else "")
        + (f"; {len(plan.deleted)} done earlier are gone from the source (rows kept)" if plan.deleted else "")
    )
    try:
        if not plan.has_work:
            summary = run_inline(plan).as_dict()
        else:
            _validate_model(settings)
            summary = _run_transcription_flow(source, settings, len(plan.todo) + len(plan.restore))
    except RunAbort as exc:
        console.print(f"[red]aborted:[/] {exc.kind}: {exc}")
        return 3
    except ConfigError as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    _print_summary(summary, settings, time.monotonic() - started)
    return int(summary["exit_code"])


def _validate_model(settings: Settings, kind: str = "transcription", voice: str | None = None) -> None:
    """Check an OpenRouter model (and voice) against GET /models before a batch starts."""
    model = settings.transcription_model if kind == "transcription" else settings.speech_model
    if model.startswith("local/"):  # load it now: a bad name or folder is a usage error (exit 2)
        from voxflow.engines.base import get_synthesizer, get_transcriber

        engine = get_transcriber(settings) if kind == "transcription" else get_synthesizer(settings)
        engine.load()  # type: ignore[union-attr]
        return
    import asyncio

    from voxflow.engines.openrouter import validate_model

    asyncio.run(validate_model(settings, model, kind, voice=voice))


def _run_transcription_flow(source: str, settings: Settings, total: int) -> dict[str, Any]:
    _prefect_defaults()
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.transcribe import transcribe_flow

    flow = transcribe_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=settings.recording_workers))
    options = settings.public_dict()
    options.pop("out")
    with _progress(total) as listener:
        unsubscribe = events.subscribe(listener)
        try:
            return flow(source=source, out=settings.out, options=options)
        finally:
            unsubscribe()


class _progress:
    """A rich progress bar fed by voxflow.progress events: files, audio hours, cost, ETA."""

    def __init__(self, total: int) -> None:
        self.bar = Progress(
            TextColumn("[bold]transcribing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[audio]} audio · ${task.fields[cost]:.4f} · {task.fields[last]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            disable=not console.is_terminal and os.environ.get("VOXFLOW_PROGRESS") != "1",
        )
        self.task = self.bar.add_task("files", total=total, audio="0:00:00", cost=0.0, last="")
        self.audio_s = 0.0
        self.cost = 0.0

    def __enter__(self):
        self.bar.start()
        return self.on_event

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def on_event(self, event: str, data: dict[str, Any]) -> None:
        if event != "finished":
            return
        result = data["result"]
        self.audio_s += result.duration_ms / 1000
        self.cost += result.cost_usd
        mark = "✓" if result.status == "done" else "✗"
        self.bar.update(
            self.task,
            advance=1,
            audio=_hms(self.audio_s),
            cost=self.cost,
            last=f"{mark} {result.recording.rel_path}"[-50:],
        )
        if result.status == "failed":
            self.bar.console.print(f"[red]failed[/] {result.error_message}")


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _print_summary(summary: dict[str, Any], settings: Settings, wall_s: float) -> None:
    table = Table(title=f"run {summary['run_id']}", show_header=False)
    rows = [
        ("done", summary["done"]),
        ("restored from catalog", summary["restored"]),
        ("skipped (already done)", summary["skipped"]),
        ("failed", summary["failed"]),
        ("waiting to settle", summary["unsettled"]),
        ("gone from source (rows kept)", summary.get("deleted", 0)),
        ("audio", _hms(summary["audio_s"])),
        ("cost", f"${summary['cost_usd']:.4f}"),
        ("wall time", f"{wall_s:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    for failure in summary["failures"]:
        console.print(f"[red]✗[/] {failure['kind']}: {failure['message']}")
    if summary.get("aborted"):
        console.print(f"[red]aborted:[/] {summary['aborted']}")
    where = "beside each recording" if settings.beside_source else settings.out
    console.print(f"outputs: {where}   catalog: {settings.out}/catalog   manifest: {summary['manifest']}")


@app.command()
def narrate(
    source: Annotated[str, typer.Argument(help="Folder, file or bucket URL of .txt/.md/.epub.")],
    out: OutOpt = None,
    model: ModelOpt = None,
    voice: Annotated[str | None, typer.Option(help="Voice id (see `voxflow voices MODEL`).")] = None,
    instructions: Annotated[str | None, typer.Option(help="Tone/pacing (models that take it).")] = None,
    speed: Annotated[float | None, typer.Option(help="Speaking speed, 1.0 = normal.")] = None,
    per_chapter: Annotated[
        bool,
        typer.Option(
            "--per-chapter/--single-file",
            help="One MP3 per chapter, or one per book with chapter frames.",
        ),
    ] = True,
    fmt: Annotated[str, typer.Option("--format", help="mp3 or m4b.")] = "mp3",
    concurrency: ConcurrencyOpt = None,
    budget_usd: BudgetOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan and estimated cost only.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Re-render books already done.")] = False,
    lexicon: Annotated[list[str] | None, typer.Option(help="Pronunciation lexicon file (repeatable).")] = None,
    credits: Annotated[
        bool, typer.Option("--credits", help="Opening/closing credits (title, author, The End).")
    ] = False,
    max_chunk_chars: Annotated[
        int | None, typer.Option(help="Longest text sent per request (default: the model's limit).")
    ] = None,
    bitrate: Annotated[str, typer.Option(help="MP3 CBR bitrate.")] = "192k",
) -> None:
    """Narrate every document under SOURCE into MP3 audiobooks."""
    settings = _settings(
        out=out,
        model=model,
        voice=voice,
        concurrency=concurrency,
        budget_usd=budget_usd,
        force=force or None,
    )
    _say_engine(settings.speech_model, settings.openrouter.has_key)
    from voxflow.narration import NarrationOptions, parse_formats, run_narrate

    _prefect_defaults()

    try:
        if not dry_run:
            _validate_model(settings, "speech", voice=settings.voice)
        options = NarrationOptions(
            per_chapter=per_chapter,
            formats=parse_formats(fmt),
            instructions=instructions,
            speed=speed,
            max_chunk_chars=max_chunk_chars,
            credits=credits,
            lexicon=tuple(lexicon or ()),
            bitrate=bitrate,
        )
        code = run_narrate(source, settings, dry_run=dry_run, options=options, run_flow=_run_narration_flow)
    except RunAbort as exc:
        console.print(f"[red]aborted:[/] {exc.kind}: {exc}")
        code = 3
    except (ConfigError, SourceError) as exc:
        console.print(f"[red]error:[/] {exc}")
        code = 2
    raise typer.Exit(code)


def _run_narration_flow(source: str, settings: Settings, options: Any) -> dict[str, Any]:
    """Run flows/narrate.py on ephemeral Prefect (or PREFECT_API_URL's server)."""
    from flows.narrate import bounded
    from voxflow.narration import document_workers

    public = settings.public_dict()
    public.pop("out", None)
    flow = bounded(document_workers(settings))
    return flow(source=source, out=settings.out, options=public, narration=options.as_dict())


@app.command()
def models(
    kind: Annotated[str, typer.Option(help="transcription or speech.")] = "transcription",
) -> None:
    """List the models voxflow can use: embedded ones, and OpenRouter's (with a key)."""
    from voxflow.settings import LOCAL_STT_DEFAULT, LOCAL_TTS_DEFAULT

    if kind not in ("transcription", "speech"):
        console.print("[red]error:[/] --kind is transcription or speech")
        raise typer.Exit(2)
    settings = _settings()
    table = Table("name", "pricing")
    table.add_column("id", overflow="fold")  # ids stay whole: they are meant to be copied
    table.columns.insert(0, table.columns.pop())
    table.add_row(
        LOCAL_STT_DEFAULT if kind == "transcription" else LOCAL_TTS_DEFAULT,
        "embedded offline engine",
        "free",
    )
    if settings.openrouter.has_key:
        for entry in _remote_models(settings, kind):
            pricing = ", ".join(f"{k}={v}" for k, v in (entry.get("pricing") or {}).items())
            table.add_row(entry.get("id", "?"), entry.get("name", ""), pricing)
    else:
        console.print("(set OPENROUTER_API_KEY to list OpenRouter's models)")
    out_console.print(table)


def _remote_models(settings: Settings, kind: str) -> list[dict[str, Any]]:
    import asyncio

    from voxflow.engines.openrouter import list_models

    try:
        return asyncio.run(list_models(settings, kind))
    except VoxflowError as exc:
        console.print(f"[red]error:[/] {exc.kind}: {exc}")
        raise typer.Exit(3 if isinstance(exc, RunAbort) else 2) from exc


@app.command()
def voices(model: Annotated[str, typer.Argument(help="A speech model id.")]) -> None:
    """List the voices a speech model supports."""
    if model.startswith("local/"):
        out_console.print("local voices: local/en_US-joe-medium (bundled), or local/<path to a Piper .onnx>")
        return
    settings = _settings()
    if not settings.openrouter.has_key:
        console.print("[red]error:[/] set OPENROUTER_API_KEY to list OpenRouter voices")
        raise typer.Exit(2)
    for entry in _remote_models(settings, "speech"):
        if entry.get("id") == model:
            for v in entry.get("supported_voices") or []:
                out_console.print(v)
            return
    console.print(f"[red]error:[/] unknown speech model {model!r}")
    raise typer.Exit(3)


@app.command()
def report(out: OutOpt = None) -> None:
    """Summarise the catalog: done/failed per recording, hours, cost; recent failures."""
    from voxflow.reporting import catalog_report

    settings = _settings(out=out)
    try:
        text = catalog_report(settings.out)
    except VoxflowError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    out_console.print(text)


@app.command()
def doctor() -> None:
    """Check ffmpeg/ffprobe, the embedded engines, the API key (never printed), Prefect."""
    from voxflow.reporting import doctor_checks

    ok = True
    table = Table("check", "status", "detail")
    for name, passed, detail in doctor_checks(_settings()):
        ok &= passed
        table.add_row(name, "[green]ok[/]" if passed else "[red]FAIL[/]", detail)
    out_console.print(table)
    raise typer.Exit(0 if ok else 2)


@app.command()
def emulator(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8089,
    faults: Annotated[str | None, typer.Option(help="e.g. 429:0.1,500:0.05,drop:0.02")] = None,
    latency_ms: Annotated[int, typer.Option(help="Fixed latency per request.")] = 0,
    key: Annotated[list[str] | None, typer.Option(help="Accepted API key(s).")] = None,
) -> None:
    """Run the local OpenRouter emulator on 127.0.0.1 (tests, demos, benchmarks)."""
    from voxflow.emulator import serve

    serve(port=port, faults=faults, latency_ms=latency_ms, keys=key or ["sk-or-emulator"])


def _logging() -> None:
    """voxflow's own log lines (retries, skipped work) to stderr; VOXFLOW_LOG_LEVEL sets the level."""
    import logging

    from rich.logging import RichHandler

    logger = logging.getLogger("voxflow")
    if not logger.handlers:
        logger.addHandler(RichHandler(console=console, show_path=False, markup=False))
        logger.setLevel(os.environ.get("VOXFLOW_LOG_LEVEL", "WARNING").upper())
        logger.propagate = False


def main() -> None:
    """Entry point of the ``voxflow`` script."""
    _logging()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # flows/, tasks/ in a checkout
    try:
        app()
    except VoxflowError as exc:
        console.print(f"[red]error:[/] {exc.kind}: {exc}")
        sys.exit(3 if isinstance(exc, RunAbort) else 2)


if __name__ == "__main__":
    main()
