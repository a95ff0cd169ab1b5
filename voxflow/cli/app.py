"""``voxflow …``: the command line (typer + rich). Each command runs a Prefect flow or reads
the catalog; exit codes: 0 done, 1 some items failed, 2 usage/config error, 3 run aborted."""

from __future__ import annotations

import atexit
import os
import signal
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from voxflow import interrupts
from voxflow.cli.common import (
    BudgetOpt,
    ClusterOpt,
    ConcurrencyOpt,
    ModelOpt,
    NotifyAlwaysOpt,
    NotifyOpt,
    OutOpt,
    check_out,
    check_source,
    console,
    debug_on,
    guarded,
    notifier_for,
    out_console,
    prefect_defaults,
    report_error,
    run_bound,
    say_engine,
    say_stopping,
    settings_from,
    validate_model,
    with_default,
)
from voxflow.cli.progress import hms
from voxflow.cli.streams import guard_streams
from voxflow.cli.transcribe import run_transcribe
from voxflow.cli.usage import Command, NoArgsIsHelpError, UsageError, usage_line
from voxflow.errors import ConfigError
from voxflow.fsnames import one_line
from voxflow.settings import Settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: no "<bool>" column, defaults shown
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="voxflow: transcribe recordings into transcripts, subtitles and Parquet; narrate "
    "documents into audiobooks. Offline by default; OpenRouter when OPENROUTER_API_KEY is set.",
)


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


@app.command(cls=Command)
@guarded
def transcribe(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Folder, file, or bucket URL (s3://…).")],
    out: OutOpt = None,
    model: ModelOpt = None,
    language: Annotated[
        str | None, typer.Option(help=with_default("ISO-639-1 code (en, de, …) or auto.", shown="auto"))
    ] = None,
    formats: Annotated[
        str | None, typer.Option(help=with_default("Sidecars: any of srt,vtt,txt,json.", "formats"))
    ] = None,
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
        typer.Option(help=with_default("Leave files changed this recently for the next run.", "settle_seconds")),
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
        typer.Option(
            help="Comma-separated ISO-639-1 codes (fr,de): also write <stem>.<code>.* translated, cue for cue. "
            "en with a local/… model is offline (Whisper); every other language goes through OpenRouter chat "
            "(needs OPENROUTER_API_KEY)."
        ),
    ] = None,
    translation_model: Annotated[
        str | None,
        typer.Option(help=with_default("OpenRouter chat model for --translate-to.", "translation_model")),
    ] = None,
    audio_language: Annotated[
        str | None,
        typer.Option(help="In files with several audio tracks, the one in this language (default: the default track)."),
    ] = None,
    minutes: Annotated[
        bool,
        typer.Option(
            "--minutes",
            help="Also write <stem>.minutes.md: summary, decisions, action items, each citing the transcript's "
            "[mm:ss] times (OpenRouter chat; needs OPENROUTER_API_KEY).",
        ),
    ] = False,
    minutes_model: Annotated[
        str | None,
        typer.Option(help=with_default("OpenRouter chat model for --minutes.", "minutes_model")),
    ] = None,
) -> None:
    """Transcribe every new recording under SOURCE: transcripts, subtitles, Parquet."""
    settings = settings_from(
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
        translation_model=translation_model,
        audio_language=audio_language,
        minutes=minutes or None,
        minutes_model=minutes_model,
    )
    raise typer.Exit(run_transcribe(source, settings, notifier_for("transcribe", notify, notify_always)))


@app.command(cls=Command)
@guarded
def narrate(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Folder, file or bucket URL of .txt/.md/.epub.")],
    out: OutOpt = None,
    model: ModelOpt = None,
    voice: Annotated[
        str | None,
        typer.Option(help="Voice id (see `voxflow voices MODEL`), or local/<folder> of a Piper voice."),
    ] = None,
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
    from voxflow.cli.narrate import run_narrate
    from voxflow.narrate import NarrationOptions, parse_formats
    from voxflow.narrate.options import validate_narration, voice_as_model

    model, voice = voice_as_model(model, voice)
    settings = settings_from(
        out=out,
        model=model,
        voice=voice,
        concurrency=concurrency,
        budget_usd=budget_usd,
        force=force or None,
        cluster=cluster,
    )
    check_source(source)
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
    options.assembly().validate()
    validate_narration(settings, options)  # every refusal before the engine line and any work
    prefect_defaults()
    if not dry_run:
        check_out(settings.out)
        validate_model(settings, "speech", voice=settings.voice)
        say_engine(settings.speech_model, settings.openrouter.has_key)
    with interrupts.graceful_signals(say_stopping):
        code = run_narrate(
            source,
            settings,
            dry_run=dry_run,
            options=options,
            run_flow=run_narration_flow,
            on_summary=notifier_for("narrate", notify, notify_always),
        )
    raise typer.Exit(code)


def run_narration_flow(source: str, settings: Settings, options: Any) -> dict[str, Any]:
    """Run flows/narrate.py on ephemeral Prefect (or PREFECT_API_URL's server)."""
    from flows.narrate import narrate_flow

    public = settings.public_dict()
    public.pop("out", None)
    return run_bound(lambda: narrate_flow(source=source, out=settings.out, options=public, narration=options.as_dict()))


@app.command(cls=Command)
@guarded
def models(
    kind: Annotated[str, typer.Option(help="transcription or speech.")] = "transcription",
) -> None:
    """List the models voxflow can use: embedded ones, and OpenRouter's (with a key)."""
    from voxflow.settings import LOCAL_STT_DEFAULT, LOCAL_TTS_DEFAULT

    if kind not in ("transcription", "speech"):
        console.print("[red]error:[/] --kind is transcription or speech")
        raise typer.Exit(2)
    settings = settings_from()
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


@app.command(cls=Command)
@guarded
def voices(model: Annotated[str, typer.Argument(metavar="MODEL", help="A speech model id.")]) -> None:
    """List the voices a speech model supports."""
    if model.startswith("local/"):
        out_console.print(
            "local voices: local/en_US-joe-medium (bundled, English), or local/<folder> of any Piper voice "
            "(<name>.onnx + <name>.onnx.json)"
        )
        return
    settings = settings_from()
    if not settings.openrouter.has_key:
        console.print("[red]error:[/] set OPENROUTER_API_KEY to list OpenRouter voices")
        raise typer.Exit(2)
    for entry in _remote_models(settings, "speech"):
        if entry.get("id") == model:
            for v in entry.get("supported_voices") or []:
                out_console.print(v)
            return
    console.print(f"[red]error:[/] unknown speech model {escape(one_line(repr(model)))}")
    raise typer.Exit(3)


@app.command(cls=Command)
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

    settings = settings_from(out=out)
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


@app.command(cls=Command)
@guarded
def doctor(out: OutOpt = None) -> None:
    """Check ffmpeg and its codecs, the embedded engines, the API key and its credits (the key
    is never printed), free disk space at --out, and Prefect. Exit code 1 when a check failed."""
    from flows.server import background_server_url
    from voxflow.reporting import doctor_checks

    background = None if os.environ.get("PREFECT_API_URL") else background_server_url()
    checks = doctor_checks(settings_from(out=out), background)
    colour = {"ok": "green", "warn": "yellow", "fail": "red"}
    for check in checks:  # plain lines: the terminal wraps them, nothing is cut or elided
        status = f"[{colour[check.status]}]{check.status:<4}[/]"
        out_console.print(f"{status}  {escape(check.name)}: {escape(check.detail)}", soft_wrap=True, highlight=False)
    raise typer.Exit(1 if any(c.status == "fail" for c in checks) else 0)


server_app = typer.Typer(
    no_args_is_help=True,
    help="Keep a Prefect server (with its UI) running in the background; runs use it and skip the "
    "temporary server's start-up.",
)
app.add_typer(server_app, name="server")


@server_app.command("start", cls=Command)
@guarded
def server_start(port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 4200) -> None:
    """Start the server (a no-op when it runs already) and print its UI's URL."""
    from flows.server import start_background_server

    prefect_defaults()
    state = start_background_server(port)
    out_console.print(
        f"Prefect server: {state['ui']} (pid {state['pid']}); runs use it until `voxflow server stop`", soft_wrap=True
    )


@server_app.command("status", cls=Command)
@guarded
def server_status() -> None:
    """Say whether the background server runs (exit 1 when it does not)."""
    from flows.server import background_server_url

    url = background_server_url()
    if url is None:
        out_console.print("no background server: runs start a temporary one (`voxflow server start` keeps one)")
        raise typer.Exit(1)
    out_console.print(f"Prefect server: {url.removesuffix('/api')} — runs use it")


@server_app.command("stop", cls=Command)
@guarded
def server_stop() -> None:
    """Stop the background server."""
    from flows.server import stop_background_server

    state = stop_background_server()
    out_console.print(f"stopped the Prefect server (pid {state['pid']})" if state else "no background server ran")


@app.command(cls=Command)
def emulator(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8089,
    faults: Annotated[str | None, typer.Option(help="e.g. 429:0.1,500:0.05,drop:0.02")] = None,
    latency_ms: Annotated[int, typer.Option(help="Fixed latency per request.")] = 0,
    key: Annotated[list[str] | None, typer.Option(help="Accepted API key(s).")] = None,
) -> None:
    """Run the local OpenRouter emulator on 127.0.0.1 (tests, demos, benchmarks)."""
    from voxflow.testing.emulator import serve

    serve(port=port, faults=faults, latency_ms=latency_ms, keys=key or ["sk-or-emulator"])


@app.command(cls=Command)
@guarded
def search(
    query: Annotated[str, typer.Argument(metavar="QUERY", help='Words, or "an exact phrase" (ranked first).')],
    out: OutOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON list of hits (for scripts).")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Most hits shown.")] = 20,
) -> None:
    """Find the moments transcripts say QUERY: recording, time (mm:ss) and line, best first."""
    import json

    from voxflow.review.search import search as find

    if not query.strip():
        raise ConfigError('QUERY is empty: give words or "an exact phrase"')
    hits = find(settings_from(out=out).out, query, limit)
    if as_json:
        print(json.dumps([h.as_dict() for h in hits], ensure_ascii=False))
        return
    table = Table("recording", "time", "line")
    for hit in hits:
        table.add_row(hit.rel_path, hit.time, hit.snippet)
    out_console.print(table if hits else f"no transcript matches {query!r}", markup=False, highlight=False)


@app.command(cls=Command)
@guarded
def serve(
    out: Annotated[str, typer.Argument(metavar="OUT", help="The output folder of a transcribe run.")],
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
    where = f"serving {one_line(out)} on http://{shown}:{port}/" + (" (token required: ?token=…)" if token else "")
    console.print(where, markup=False, highlight=False)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


def _logging() -> None:
    """voxflow's own log lines (retries, waits, skipped work) to stderr, each ONE line however
    narrow the terminal ("warning: …", like the "error: …" lines); VOXFLOW_LOG_LEVEL sets the level."""
    import logging

    logger = logging.getLogger("voxflow")
    if not logger.handlers:
        handler = logging.StreamHandler()  # sys.stderr as guard_streams left it
        handler.setFormatter(_OneLine())
        logger.addHandler(handler)
        logger.setLevel(os.environ.get("VOXFLOW_LOG_LEVEL", "WARNING").upper())
        logger.propagate = False


class _OneLine:
    """``level: message`` on one line (a traceback follows only with --debug)."""

    def format(self, record: Any) -> str:
        line = " ".join(f"{record.levelname.lower()}: {record.getMessage()}".split("\n"))
        if record.exc_info and debug_on():
            import traceback

            return line + "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return line


def main() -> None:
    """Entry point of the ``voxflow`` script: every error one line, exit codes of ExitCode; a
    reader that goes away (``| head -1``) changes neither the run nor its code (cli/streams.py)."""
    atexit.register(_ignore_stop_signals)  # registered first: runs last, once Python code is done
    guard_streams()
    _logging()
    code = _run_app()
    sys.stdout.flush()
    _exit_promptly(code)
    sys.exit(code)


def _exit_promptly(code: int) -> None:
    """The command is over: the engine processes end now instead of being waited for, and a
    stop signal while the interpreter exits (a late copy of a Ctrl-C: the terminal and `uv run`
    each deliver one) exits at once with the same code, instead of a KeyboardInterrupt
    traceback from the exit handlers."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: os._exit(code))
    if (engines := sys.modules.get("voxflow.engines.process")) is not None:
        engines.stop()


def _ignore_stop_signals() -> None:
    """The last exit handler: what remains is the interpreter's own teardown, which resets
    Python-level handlers to the default (a stop signal there killed the process: exit -2)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _run_app() -> int:
    """The app without click's own error handling, so its usage errors are one line too."""
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:  # plain `voxflow`: the help, as before
        exc.show()
        return exc.exit_code
    except UsageError as exc:  # a bad value, an unknown option or command, a missing argument
        console.print(f"error: {usage_line(exc)}", markup=False, highlight=False)
        return exc.exit_code
    except Exception as exc:  # outside a command (typer itself, imports): still one line
        return report_error(exc)
    return code if isinstance(code, int) else 0
