"""``voxflow …``: the command line (typer + rich). Each command runs a Prefect flow or reads
the catalog; exit codes: 0 done, 1 some items failed, 2 usage/config error, 3 run aborted."""

from __future__ import annotations

import functools
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from voxflow import interrupts
from voxflow import progress as events
from voxflow.cli.progress import RunProgress, hms
from voxflow.errors import ConfigError, ExitCode, RunAbort, SourceError, explain
from voxflow.fsnames import printable_name
from voxflow.settings import Settings, load_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: no "<bool>" column, defaults shown
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="voxflow: transcribe recordings into transcripts, subtitles and Parquet; narrate "
    "documents into audiobooks. Offline by default; OpenRouter when OPENROUTER_API_KEY is set.",
)
console = Console(stderr=True, soft_wrap=True)  # a message is one line, however narrow the terminal
out_console = Console()
Command = TypeVar("Command", bound=Callable[..., Any])


def _default(text: str, field: str | None = None, shown: str = "") -> str:
    """Help ``text`` with the setting's default (the flag itself defaults to "not given", so the
    environment variable can set it) or the ``shown`` words."""
    value = Settings.model_fields[field].default if field else shown
    return f"{text}  [default: {','.join(value) if isinstance(value, tuple) else value}]"


OutOpt = Annotated[str | None, typer.Option("--out", "-o", help=_default("Output folder or bucket URL.", "out"))]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help=_default(
            "Model id (local/… or an OpenRouter id).", shown="OpenRouter's with OPENROUTER_API_KEY, else local"
        ),
    ),
]
ConcurrencyOpt = Annotated[
    int | None, typer.Option(help=_default("Engine requests in flight (whole run).", "concurrency"))
]
ClusterOpt = Annotated[
    str | None,
    typer.Option(help="Run the work on Dask: tcp://HOST:PORT of a scheduler, or local:N worker processes."),
]
NotifyOpt = Annotated[
    str | None,
    typer.Option(
        "--notify",
        envvar="VOXFLOW_NOTIFY_URL",
        help="POST the run's summary as JSON to this URL (e.g. a Slack webhook) when it had failures or was aborted.",
    ),
]
NotifyAlwaysOpt = Annotated[
    bool, typer.Option("--notify-always", help="With --notify: send the summary after every run, not only bad ones.")
]
BudgetOpt = Annotated[
    float | None, typer.Option("--budget-usd", help=_default("Stop starting work past this cost.", shown="no limit"))
]


def _debug() -> bool:
    return os.environ.get("VOXFLOW_DEBUG", "").lower() not in ("", "0", "false", "no")


def _report(exc: BaseException) -> int:
    """The one place an error reaches the user: one line on stderr (the traceback too with
    --debug) and the exit code it means."""
    message, code = explain(exc)
    if _debug():
        traceback.print_exception(exc, file=sys.stderr)
    console.print(f"{'aborted' if code == ExitCode.ABORTED else 'error'}: {message}", markup=False, highlight=False)
    return int(code)


def guarded(command: Command) -> Command:
    """``command`` with every error turned into one line and its exit code by ``_report``."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException, typer.BadParameter):
            raise
        except Exception as exc:
            raise typer.Exit(_report(exc)) from exc

    return run  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out_console.print(f"voxflow {version('voxflow')}")
        raise typer.Exit()


@app.callback()
def _global(
    debug: Annotated[
        bool, typer.Option("--debug", envvar="VOXFLOW_DEBUG", help="Show tracebacks with the error lines.")
    ] = False,
    _: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    if debug:
        os.environ["VOXFLOW_DEBUG"] = "1"


def _prefect_defaults() -> None:
    """Quiet, patient ephemeral Prefect unless the user configured otherwise. A failed flow's
    traceback is Prefect's log; the user reads our one line instead (Prefect's with --debug or
    PREFECT_LOGGING_LEVEL=INFO)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    if not _debug() and os.environ["PREFECT_LOGGING_LEVEL"].upper() not in ("DEBUG", "INFO"):
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "CRITICAL")


def _settings(**flags: Any) -> Settings:
    """Settings from the environment and ``flags``; a bad value raises ConfigError naming both."""
    settings = load_settings(**flags)
    if settings.cluster and settings.budget_usd is not None:
        raise ConfigError(
            "--budget-usd is kept by each process, so a cluster could pass it: run a budgeted batch without --cluster"
        )
    return settings


def _check_out(out: str) -> None:
    """A local --out must be a folder we can create and write in: refuse it before any work."""
    if "://" in out and not out.startswith("file://"):
        return  # a bucket: its errors surface on first use
    path = Path(out.removeprefix("file://")).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder: name a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".voxflow-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"--out {out} cannot be written ({exc.strerror or exc}): name a folder you can write to"
        ) from exc


def _check_transcription(settings: Settings) -> None:
    """Refuse settings the transcription engine would ignore, before any work."""
    model = settings.transcription_model
    if settings.translate_to and not model.startswith("local/"):
        raise ConfigError(
            f"--translate-to needs an offline model; {model} is not one (use --model local/auto or local/base)"
        )
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


def _say_engine(model: str, has_key: bool) -> None:
    if model.startswith("local/"):
        why = "" if has_key else " (no OPENROUTER_API_KEY set)"
        console.print(f"engine: embedded offline [bold]{model}[/]{why}")
    else:
        console.print(f"engine: OpenRouter [bold]{model}[/]")


@app.command()
@guarded
def transcribe(
    source: Annotated[str, typer.Argument(help="Folder, file, or bucket URL (s3://…).")],
    out: OutOpt = None,
    model: ModelOpt = None,
    language: Annotated[
        str | None, typer.Option(help=_default("ISO-639-1 code (en, de, …) or auto.", shown="auto"))
    ] = None,
    formats: Annotated[str | None, typer.Option(help=_default("Sidecars: any of srt,vtt,txt,json.", "formats"))] = None,
    concurrency: ConcurrencyOpt = None,
    budget_usd: BudgetOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Redo recordings already done.")] = False,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Try again recordings that failed for good and have not changed."),
    ] = False,
    beside_source: Annotated[
        bool,
        typer.Option("--beside-source", help="Write sidecars next to each recording (media-library mode)."),
    ] = False,
    settle_seconds: Annotated[
        float | None,
        typer.Option(help=_default("Leave files changed this recently for the next run.", "settle_seconds")),
    ] = None,
    follow_symlinks: Annotated[bool, typer.Option("--follow-symlinks", help="Follow symlinks out of SOURCE.")] = False,
    diarize: Annotated[bool, typer.Option("--diarize", help="Speaker labels (models that support it).")] = False,
    keyterms: Annotated[str | None, typer.Option(help="Comma-separated vocabulary hints.")] = None,
    shard: Annotated[str | None, typer.Option(help="i/n: this worker's share of the recordings.")] = None,
    cluster: ClusterOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace sidecar files voxflow did not write (e.g. your own .srt).")
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for another run on the same --out to finish.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing but errors and the summary (no progress).")
    ] = False,
    notify: NotifyOpt = None,
    notify_always: NotifyAlwaysOpt = False,
    translate_to: Annotated[
        str | None,
        typer.Option(help="en: also write <stem>.en.* translated from other languages (offline models)."),
    ] = None,
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
        retry_failed=retry_failed or None,
        beside_source=beside_source or None,
        settle_seconds=settle_seconds,
        follow_symlinks=follow_symlinks or None,
        diarize=diarize or None,
        keyterms=keyterms,
        shard=shard,
        cluster=cluster,
        overwrite=overwrite or None,
        wait=wait or None,
        quiet=quiet or None,
        translate_to=translate_to,
    )
    raise typer.Exit(run_transcribe(source, settings, _notifier("transcribe", notify, notify_always)))


def _notifier(command: Any, url: str | None, always: bool) -> Callable[[dict[str, Any]], None]:
    from voxflow.notify import notifier

    return notifier(command, url, always, lambda line: console.print(f"warning: {line}", markup=False))


def run_transcribe(source: str, settings: Settings, notify: Callable[[dict[str, Any]], None] | None = None) -> int:
    """The transcribe command without typer: hold the output's lock, then plan, run, report.
    The first Ctrl-C or SIGTERM stops starting work (exit 130, see voxflow.interrupts)."""
    with interrupts.graceful_signals(_say_stopping):
        return _transcribe_command(source, settings, notify)


def _transcribe_command(source: str, settings: Settings, notify: Callable[[dict[str, Any]], None] | None) -> int:
    from voxflow.lock import OutputLocked, output_lock
    from voxflow.sources import new_run_id

    _check_transcription(settings)
    _check_out(settings.out)
    run_id = new_run_id()
    try:
        with output_lock(settings, run_id):
            return _transcribe_locked(source, settings, run_id, notify)
    except OutputLocked as exc:
        return _report(exc)


def _transcribe_locked(
    source: str, settings: Settings, run_id: str, notify: Callable[[dict[str, Any]], None] | None
) -> int:
    """Plan, run (Prefect only if there is work), report."""
    from voxflow.transcribe import plan_run, run_inline

    started = time.monotonic()
    if not settings.quiet:
        _say_engine(settings.transcription_model, settings.openrouter.has_key)
    try:
        plan = plan_run(source, settings)
    except SourceError as exc:
        return _report(exc)
    if plan.found == 0:
        console.print(f"no media files found in {source} ({plan.ignored} other files ignored)")
        return 0
    if not settings.quiet:
        console.print(
            f"found {plan.found} recordings: {len(plan.todo)} to transcribe, "
            f"{len(plan.skipped)} already done, {len(plan.restore)} to restore from the catalog"
            + (f", {len(plan.unsettled)} still changing (next run)" if plan.unsettled else "")
            + (f"; {len(plan.deleted)} done earlier are gone from the source (rows kept)" if plan.deleted else "")
        )
        _say_passed_over(plan.passed_over)
    _say_known_failures(plan.known_failures)
    try:
        if not plan.has_work:
            summary = run_inline(plan, run_id).as_dict()
        else:
            _validate_model(settings)
            if interrupts.requested():
                console.print("[yellow]interrupted[/] before any recording started")
                return interrupts.INTERRUPTED_EXIT
            summary = _run_transcription_flow(source, settings, len(plan.todo) + len(plan.restore), run_id)
    except (RunAbort, ConfigError) as exc:
        if notify and isinstance(exc, RunAbort):  # stopped before the run could write a manifest
            notify({"aborted": f"{exc.kind}: {exc}"})
        return _report(exc)
    _print_summary(summary, settings, time.monotonic() - started)
    if notify:
        notify(summary)
    return int(summary["exit_code"])


def _say_known_failures(known: list[Any]) -> None:
    """One line for recordings that failed for good earlier and have not changed."""
    if known:
        runs = ", ".join(sorted({k.since_run for k in known}))
        console.print(
            f"{len(known)} known failures (unchanged since run {runs}; --retry-failed to try again)",
            markup=False,
            highlight=False,
        )


def _validate_model(settings: Settings, kind: str = "transcription", voice: str | None = None) -> None:
    """Check an OpenRouter model (and voice) against GET /models before a batch starts."""
    model = settings.transcription_model if kind == "transcription" else settings.speech_model
    if model.startswith("local/"):  # load it now: a bad name or folder is a usage error (exit 2)
        from voxflow.engines.base import get_synthesizer, get_transcriber

        engine = get_transcriber(settings) if kind == "transcription" else get_synthesizer(settings)
        engine.load()
        return
    import asyncio

    from voxflow.engines.openrouter import list_models, validate_model

    found = asyncio.run(validate_model(settings, model, kind, voice=voice))
    if kind == "transcription" and settings.diarize and "diarize" not in (found.get("supported_parameters") or []):
        able = [
            m["id"] for m in asyncio.run(list_models(settings, kind)) if "diarize" in m.get("supported_parameters", [])
        ]
        raise ConfigError(
            f"--diarize: {model} cannot label speakers; pick a model that can ({', '.join(able) or 'none listed'})"
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


def _run_transcription_flow(source: str, settings: Settings, total: int, run_id: str | None = None) -> dict[str, Any]:
    _prefect_defaults()
    from flows.transcribe import transcribe_flow

    flow = transcribe_flow
    options = settings.public_dict()
    options.pop("out")
    with RunProgress(
        total, console, quiet=settings.quiet, force_bar=os.environ.get("VOXFLOW_PROGRESS") == "1"
    ) as shown:
        unsubscribe = events.subscribe(shown.on_event)
        try:
            return _run_bound(lambda: flow(source=source, out=settings.out, options=options, run_id=run_id))
        finally:
            unsubscribe()


def _run_bound(run_flow: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a flow in a worker thread (stop signals stay ours, see voxflow.interrupts) on a
    temporary Prefect server that dies with this process (flows.server)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.server import start_bound_server

    api_url = start_bound_server()

    def run_told_where_the_api_is() -> dict[str, Any]:
        if api_url is None:
            return run_flow()
        with temporary_settings(updates={PREFECT_API_URL: api_url}):  # travels with each task to Dask workers
            return run_flow()

    return interrupts.run_in_worker(run_told_where_the_api_is)


def _say_stopping(signal_name: str) -> None:
    console.print(
        f"\n[yellow]{signal_name}:[/] stopping — no new work starts; what is in flight finishes or is "
        "checkpointed, then the summary (press Ctrl-C again to stop at once)"
    )


def _print_summary(summary: dict[str, Any], settings: Settings, wall_s: float) -> None:
    table = Table(title=f"run {summary['run_id']}", show_header=False)
    rows = [
        ("done", summary["done"]),
        ("restored from catalog", summary["restored"]),
        ("skipped (already done)", summary["skipped"]),
        ("failed", summary["failed"]),
        ("waiting to settle", summary["unsettled"]),
        ("gone from source (rows kept)", summary.get("deleted", 0)),
        ("audio", hms(summary["audio_s"])),
        ("cost", f"${summary['cost_usd']:.4f}"),
        ("wall time", f"{wall_s:.1f} s"),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)
    for failure in summary["failures"]:
        console.print(f"[red]✗[/] {failure['kind']}: {failure['message']}")
    for note in summary.get("left_alone", []):
        console.print(f"[yellow]![/] {note}")
    if summary.get("aborted"):
        console.print(f"[red]aborted:[/] {summary['aborted']}")
    if summary.get("interrupted"):
        console.print(
            f"[yellow]interrupted:[/] {summary.get('left_undone', 0)} recordings left for the next run "
            "(run the same command again to resume)"
        )
    where = "beside each recording" if settings.beside_source else settings.out
    console.print(f"outputs: {where}   catalog: {settings.out}/catalog   manifest: {summary['manifest']}")


@app.command()
@guarded
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
    cluster: ClusterOpt = None,
    notify: NotifyOpt = None,
    notify_always: NotifyAlwaysOpt = False,
) -> None:
    """Narrate every document under SOURCE into MP3 audiobooks."""
    settings = _settings(
        out=out,
        model=model,
        voice=voice,
        concurrency=concurrency,
        budget_usd=budget_usd,
        force=force or None,
        cluster=cluster,
    )
    if not dry_run:
        _check_out(settings.out)
    _say_engine(settings.speech_model, settings.openrouter.has_key)
    from voxflow.cli.narrate import run_narrate
    from voxflow.narrate import NarrationOptions, parse_formats

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
        with interrupts.graceful_signals(_say_stopping):
            code = run_narrate(
                source,
                settings,
                dry_run=dry_run,
                options=options,
                run_flow=_run_narration_flow,
                on_summary=_notifier("narrate", notify, notify_always),
            )
    except (RunAbort, ConfigError, SourceError) as exc:
        code = _report(exc)
    raise typer.Exit(code)


def _run_narration_flow(source: str, settings: Settings, options: Any) -> dict[str, Any]:
    """Run flows/narrate.py on ephemeral Prefect (or PREFECT_API_URL's server)."""
    from flows.narrate import narrate_flow

    public = settings.public_dict()
    public.pop("out", None)
    return _run_bound(
        lambda: narrate_flow(source=source, out=settings.out, options=public, narration=options.as_dict())
    )


@app.command()
@guarded
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
        "embedded offline engine" + (", language detected per window" if kind == "transcription" else ""),
        "free",
    )
    if kind == "transcription":
        table.add_row("local/tiny.en", "embedded offline engine, English only", "free")
        table.add_row("local/base", "embedded offline engine, every language", "free")
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

    return asyncio.run(list_models(settings, kind))


@app.command()
@guarded
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
@guarded
def report(
    out: OutOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (for scripts).")] = False,
    since: Annotated[str | None, typer.Option(help="Only runs started on or after this date (YYYY-MM-DD).")] = None,
) -> None:
    """Summarise the catalog (done/failed, hours, cost, failures) and each night's runs.
    Exit code 1 when the last run had failures."""
    import json

    from voxflow.reporting import parse_since, report_data, report_exit_code, report_lines

    settings = _settings(out=out)
    data = report_data(settings.out, parse_since(since))
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")  # never wrapped, whatever the width
    else:
        nights = ["", *_nights_table(data["nights"])] if data["nights"] else []
        for line in [*report_lines(data), *nights]:
            out_console.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(report_exit_code(data))


def _nights_table(nights: list[dict[str, Any]]) -> list[str]:
    """Runs grouped by the local date they started on, as plain aligned lines (never cut)."""
    lines = ["night        runs  done  failed     audio        cost      wall"]
    for n in nights:
        lines.append(
            f"{n['night']:<10} {n['runs']:>6} {n['done']:>5} {n['failed']:>7} {hms(n['audio_hours'] * 3600):>9} "
            f"{'$' + format(n['cost_usd'], '.4f'):>11} {hms(n['wall_s']):>9}"
        )
    return lines


@app.command()
@guarded
def doctor(out: OutOpt = None) -> None:
    """Check ffmpeg and its codecs, the embedded engines, the API key and its credits (the key
    is never printed), free disk space at --out, and Prefect. Exit code 1 when a check failed."""
    from voxflow.reporting import doctor_checks

    checks = doctor_checks(_settings(out=out))
    colour = {"ok": "green", "warn": "yellow", "fail": "red"}
    for check in checks:  # plain lines: the terminal wraps them, nothing is cut or elided
        status = f"[{colour[check.status]}]{check.status:<4}[/]"
        out_console.print(f"{status}  {escape(check.name)}: {escape(check.detail)}", soft_wrap=True, highlight=False)
    raise typer.Exit(1 if any(c.status == "fail" for c in checks) else 0)


@app.command()
def emulator(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8089,
    faults: Annotated[str | None, typer.Option(help="e.g. 429:0.1,500:0.05,drop:0.02")] = None,
    latency_ms: Annotated[int, typer.Option(help="Fixed latency per request.")] = 0,
    key: Annotated[list[str] | None, typer.Option(help="Accepted API key(s).")] = None,
) -> None:
    """Run the local OpenRouter emulator on 127.0.0.1 (tests, demos, benchmarks)."""
    from voxflow.testing.emulator import serve

    serve(port=port, faults=faults, latency_ms=latency_ms, keys=key or ["sk-or-emulator"])


@app.command()
@guarded
def search(
    query: Annotated[str, typer.Argument(help='Words, or "an exact phrase" (ranked first).')],
    out: OutOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list of hits (for scripts).")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Most hits shown.")] = 20,
) -> None:
    """Find the moments transcripts say QUERY: recording, time (mm:ss) and line, best first."""
    import json

    from voxflow.review.search import search as find

    if not query.strip():
        raise ConfigError('QUERY is empty: give words or "an exact phrase"')
    hits = find(_settings(out=out).out, query, limit)
    if as_json:
        print(json.dumps([h.as_dict() for h in hits], ensure_ascii=False))
        return
    table = Table("recording", "time", "line")
    for hit in hits:
        table.add_row(hit.rel_path, hit.time, hit.snippet)
    out_console.print(table if hits else f"no transcript matches {query!r}", markup=False, highlight=False)


@app.command()
@guarded
def serve(
    out: Annotated[str, typer.Argument(help="The output folder of a transcribe run.")],
    host: Annotated[str, typer.Option(help="Listen address (non-loopback needs --token).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    token: Annotated[
        str | None, typer.Option(envvar="VOXFLOW_SERVE_TOKEN", help="Required on every request (?token= once).")
    ] = None,
) -> None:
    """Browse runs, recordings and transcripts in a browser; play any moment (read-only)."""
    import uvicorn

    from voxflow.review.app import create_app
    from voxflow.review.search import local_root

    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        raise ConfigError(f"--host {host} exposes the archive beyond this machine: add --token SECRET")
    app_ = create_app(local_root(out), token=token)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    console.print(f"serving {out} on http://{shown}:{port}/" + (" (token required: ?token=…)" if token else ""))
    uvicorn.run(app_, host=host, port=port, log_level="warning")


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
    try:
        app()
    except Exception as exc:  # outside a command (typer itself, imports): still one line
        sys.exit(_report(exc))
