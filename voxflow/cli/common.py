"""What every command shares: the consoles, the options, one-line errors (``guarded``),
settings and output checks, and running a flow on Prefect's bound temporary server."""

from __future__ import annotations

import functools
import os
import sys
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from voxflow import interrupts
from voxflow.errors import ConfigError, ExitCode, SourceError, explain
from voxflow.fsnames import one_line
from voxflow.settings import Settings, load_settings

console = Console(stderr=True, soft_wrap=True)  # a message is one line, however narrow the terminal


out_console = Console()


Command = TypeVar("Command", bound=Callable[..., Any])


def with_default(text: str, field: str | None = None, shown: str = "") -> str:
    """Help ``text`` with the setting's default (the flag itself defaults to "not given", so the
    environment variable can set it) or the ``shown`` words."""
    value = Settings.model_fields[field].default if field else shown
    return f"{text}  [default: {','.join(value) if isinstance(value, tuple) else value}]"


OutOpt = Annotated[str | None, typer.Option("--out", "-o", help=with_default("Output folder or bucket URL.", "out"))]


ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help=with_default(
            "Model id (local/… or an OpenRouter id).", shown="OpenRouter's with OPENROUTER_API_KEY, else local"
        ),
    ),
]


ConcurrencyOpt = Annotated[
    int | None, typer.Option(help=with_default("Engine requests in flight (whole run).", "concurrency"))
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
    float | None,
    typer.Option("--budget-usd", help=with_default("Stop starting work past this cost.", shown="no limit")),
]


def debug_on() -> bool:
    return os.environ.get("VOXFLOW_DEBUG", "").lower() not in ("", "0", "false", "no")


def report_error(exc: BaseException) -> int:
    """The one place an error reaches the user: one line on stderr (the traceback too with
    --debug) and the exit code it means."""
    message, code = explain(exc)
    if debug_on():
        traceback.print_exception(exc, file=sys.stderr)
    console.print(f"{'aborted' if code == ExitCode.ABORTED else 'error'}: {message}", markup=False, highlight=False)
    return int(code)


def guarded(command: Command) -> Command:
    """``command`` with every error turned into one line and its exit code by ``report_error``."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException, typer.BadParameter):
            raise
        except Exception as exc:
            raise typer.Exit(report_error(exc)) from exc

    return run  # type: ignore[return-value]


def settings_from(**flags: Any) -> Settings:
    """Settings from the environment and ``flags``; a bad value raises ConfigError naming both."""
    settings = load_settings(**flags)
    if settings.cluster and settings.budget_usd is not None:
        raise ConfigError(
            "--budget-usd is kept by each process, so a cluster could pass it: run a budgeted batch without --cluster"
        )
    return settings


def check_out(out: str) -> None:
    """A local --out must be a folder we can create and write in: refuse it before any work."""
    if "://" in out and not out.startswith("file://"):
        return  # a bucket: its errors surface on first use
    path = _local(out)
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


def check_source(source: str) -> None:
    """Refuse an empty SOURCE (it would scan the current folder) or a local one that does not
    exist, before any work."""
    if not source.strip():
        raise ConfigError("SOURCE is empty: give a folder, file or s3:// URL")
    if ("://" not in source or source.startswith("file://")) and not _local(source).exists():
        raise SourceError(f"source does not exist: {source}")


def _local(path: str) -> Path:
    return Path(path.removeprefix("file://")).expanduser()


def check_beside_source(source: str) -> None:
    """--beside-source writes each recording's sidecars into its folder: refuse a local SOURCE
    whose folder cannot take them before any work (a subfolder that cannot fails its own files)."""
    if "://" in source and not source.startswith("file://"):
        return  # a bucket: its errors surface on first use
    path = _local(source)
    folder = path if path.is_dir() else path.parent
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"--beside-source: cannot write sidecars in {folder} (read-only): "
            "leave --beside-source out to write them under --out, or make the folder writable"
        )


def say_engine(model: str, has_key: bool) -> None:
    if model.startswith("local/"):
        why = "" if has_key else " (no OPENROUTER_API_KEY set)"
        console.print(f"engine: embedded offline [bold]{escape(one_line(model))}[/]{why}")
    else:
        console.print(f"engine: OpenRouter [bold]{escape(one_line(model))}[/]")


def notifier_for(command: Any, url: str | None, always: bool) -> Callable[[dict[str, Any]], None]:
    from voxflow.notify import notifier

    return notifier(command, url, always, lambda line: console.print(f"warning: {line}", markup=False))


def prefect_defaults() -> None:
    """Quiet, patient ephemeral Prefect unless the user configured otherwise. A failed flow's
    traceback is Prefect's log; the user reads our one line instead (Prefect's with --debug or
    PREFECT_LOGGING_LEVEL=INFO)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client telemetry: voxflow sends nothing anywhere
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    if not debug_on():  # Dask's INFO lines (a local cluster's start, its dashboard) stay out of the terminal
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    if not debug_on() and os.environ["PREFECT_LOGGING_LEVEL"].upper() not in ("DEBUG", "INFO"):
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "CRITICAL")


def validate_model(settings: Settings, kind: str = "transcription", voice: str | None = None) -> None:
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


def validate_chat_model(settings: Settings, model: str, flag: str) -> None:
    """Check an OpenRouter chat model (``--translation-model``, ``--minutes-model``) against
    GET /models before a batch; an unknown one names ``flag`` (the flag and its variable)."""
    import asyncio

    from voxflow.engines.openrouter import validate_model
    from voxflow.errors import UnknownModel

    try:
        asyncio.run(validate_model(settings, model, "text"))
    except UnknownModel as exc:
        raise UnknownModel(f"{flag}: {exc}") from None


HEARTBEAT_SETTINGS = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")


def run_bound(run_flow: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a flow in a worker thread (stop signals stay ours, see voxflow.interrupts) on the
    Prefect API :func:`start_prefect_api` finds or starts.

    The run sends no flow-run heartbeats unless PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set:
    Prefect's heartbeat thread wakes once a second, so its join held the end of every run by
    up to 1 s, and nothing reads them unless a zombie-run automation is set up (runs started
    by a deployment's worker keep Prefect's default)."""
    from prefect import settings

    updates: dict[Any, Any] = {}
    if not any(name in os.environ for name in HEARTBEAT_SETTINGS):
        updates[settings.PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    if (api_url := _take_prefect_api()) is not None:  # None: Prefect's settings decide
        updates[settings.PREFECT_API_URL] = api_url  # travels with each task to Dask workers

    def run_in_these_settings() -> dict[str, Any]:
        with settings.temporary_settings(updates=updates):
            return run_flow()

    return interrupts.run_in_worker(run_in_these_settings)


_prefect_api: Future[str | None] | None = None  # found or being started, for the next run_bound
_prefect_api_lock = threading.Lock()


def start_prefect_api() -> None:
    """Find the Prefect API the next flow runs on, or start it, on a thread of its own, so a
    run loads its model and imports its flow meanwhile: PREFECT_API_URL when set, else the
    server ``voxflow server start`` keeps, else a temporary one that dies with this process
    (flows.server). One search per run: the next :func:`run_bound` takes it."""
    global _prefect_api
    with _prefect_api_lock:
        if _prefect_api is None:
            prefect_defaults()
            _prefect_api = Future()
            thread = threading.Thread(target=_find_or_start_api, args=(_prefect_api,), name="voxflow-prefect-api")
            thread.daemon = True
            thread.start()


def _take_prefect_api() -> str | None:
    """The API URL the search found, waited for; a stop request meanwhile is
    :class:`~voxflow.interrupts.Interrupted` (nothing has started yet)."""
    global _prefect_api
    start_prefect_api()
    with _prefect_api_lock:
        api, _prefect_api = _prefect_api, None
    assert api is not None
    while True:
        if interrupts.requested():
            raise interrupts.Interrupted("stopped while the Prefect API was starting: nothing started")
        try:
            return api.result(timeout=0.1)
        except TimeoutError:
            continue


def _find_or_start_api(api: Future[str | None]) -> None:
    """On its own thread, which then stays as long as the process: a temporary server is bound
    to the thread that started it (Linux ``PR_SET_PDEATHSIG`` fires when that thread ends)."""
    try:
        from prefect.settings import PREFECT_API_URL

        from flows.server import background_server_url, start_bound_server

        url = None if PREFECT_API_URL.value() else background_server_url()
        api.set_result(url or start_bound_server())
    except BaseException as exc:  # handed to run_bound, in the run's thread
        api.set_exception(exc)
        return
    threading.Event().wait()


def say_stopping(signal_name: str) -> None:
    console.print(
        f"\n[yellow]{signal_name}:[/] stopping — no new work starts; what is in flight finishes or is "
        "checkpointed, then the summary (press Ctrl-C again to stop at once)"
    )
