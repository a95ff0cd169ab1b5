"""Usage errors the command-line parser finds (a bad value, an unknown option, a missing
argument) as one line naming the flag and what to do, instead of click's usage box; and usage
lines that name arguments in capitals (``voxflow transcribe [OPTIONS] SOURCE``)."""

from __future__ import annotations

from typing import Any

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer's vendored click: only BadParameter is public
from typer.core import TyperCommand

__all__ = ["Command", "NoArgsIsHelpError", "UsageError", "usage_line"]


class Command(TyperCommand):
    """A command whose usage line reads ``[OPTIONS] SOURCE``, as click writes it, not typer's
    ``{source}`` (arguments get ``metavar`` in capitals), and whose parse errors know the
    command they belong to (the parser raises some without it)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [piece.replace("{", "").replace("}", "") for piece in super().collect_usage_pieces(ctx)]

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except UsageError as exc:
            if exc.ctx is None:
                exc.ctx = ctx
            raise


def usage_line(exc: UsageError) -> str:
    """``exc`` as one line: what is wrong, naming the flag (and the value given), and where the usage is."""
    where = f"`{exc.ctx.command_path} -h`" if exc.ctx is not None else "`voxflow -h`"
    if isinstance(exc, typer.BadParameter) and exc.param is not None and (given := _value_given(exc)):
        flag = exc.param.get_error_hint().strip("'")
        return f"{flag} {given!r}: {_one_line(exc.message)}; {where} says what it takes"
    return f"{_one_line(exc.format_message())}; {where} shows the usage"


def _value_given(exc: typer.BadParameter) -> str | None:
    """The value typer could not convert (kept on the pydantic error it raised from), if any."""
    errors = getattr(exc.__cause__, "errors", None)
    found = errors() if callable(errors) else []
    value = found[0].get("input") if found else None
    return value if isinstance(value, str) else None


def _one_line(text: str) -> str:
    return " ".join(text.split()).rstrip(".")
