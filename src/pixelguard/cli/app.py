"""The ``pixelguard`` command: a thin typer app over the library.

Commands parse options, call the library, print, and set the exit code. User errors
(bad files, options or data) print one ``error: ...`` line on stderr and exit with
code 2; a failed ``evaluate --fail-under`` gate exits with 1; Ctrl-C exits with 130. ``pixelguard --debug ...`` shows tracebacks instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

import pixelguard
from pixelguard.cli import attack_options
from pixelguard.cli.attack import attack
from pixelguard.cli.certify import certify_command
from pixelguard.cli.demo import demo
from pixelguard.cli.detect import detect_command
from pixelguard.cli.evaluate import evaluate_command
from pixelguard.cli.harden import harden_command
from pixelguard.cli.membership import membership_command
from pixelguard.cli.poison import poison_command
from pixelguard.cli.report import compare_command, report_command
from pixelguard.cli.scan_data import scan_data_command
from pixelguard.cli.serve import serve_command
from pixelguard.cli.steal import steal_command
from pixelguard.cli.train import train
from pixelguard.errors import PixelguardError

USER_ERRORS = (PixelguardError, FileNotFoundError, PermissionError, IsADirectoryError, ValueError)
"""Errors caused by what the user gave: reported in one line, without a traceback."""
USAGE_ERROR = 2
INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])


def _without_flag_placeholders(params: list[Any]) -> list[Any]:
    """Flags take no value: show no ``<bool>`` placeholder for them in ``--help``."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A pixelguard command: its help lists flags without a value placeholder."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_placeholders(super().get_params(ctx))


class Group(TyperGroup):
    """The pixelguard command group, with the same help for flags as its commands."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_placeholders(super().get_params(ctx))


app = typer.Typer(
    name="pixelguard",
    cls=Group,
    help="How few pixels does it take to fool your image classifier?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _EchoHandler(logging.Handler):
    """Library log records as ``warning: ...`` lines on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(f"{record.levelname.lower()}: {record.getMessage()}", err=True)


_settings = {"debug": False, "verbose": False}
"""Global options of the current invocation, set by :func:`root`."""


@contextlib.contextmanager
def _logging_to_stderr() -> Iterator[None]:
    """Show the library's log records on stderr while a command runs, then restore."""
    level = (
        logging.DEBUG
        if _settings["debug"]
        else logging.INFO
        if _settings["verbose"]
        else logging.WARNING
    )
    logger = logging.getLogger("pixelguard")
    handler = _EchoHandler(level)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def handle_errors(command: F) -> F:
    """Wrap a command: log to stderr, user errors end in one ``error:`` line and exit 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _logging_to_stderr():
                return command(*args, **kwargs)
        except USER_ERRORS as exc:
            if _settings["debug"]:
                raise
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(USAGE_ERROR) from None
        except KeyboardInterrupt:
            if _settings["debug"]:
                raise
            typer.echo("interrupted", err=True)
            raise typer.Exit(INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pixelguard {pixelguard.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show progress logs.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """How few pixels does it take to fool your image classifier?"""
    _settings.update(debug=debug, verbose=verbose)


def attacks_command(
    name: Annotated[
        str | None,
        typer.Argument(help="An attack: show its settings, defaults and constraints."),
    ] = None,
) -> None:
    """List the registered attacks, or one attack's settings."""
    from pixelguard.attacks.base import list_attacks

    if name is not None:
        typer.echo(f"{name}  {attack_options.attack_summary_line(name)}")
        for line in attack_options.attack_settings_lines(name):
            typer.echo(f"  {line}")
        return
    names = list_attacks()
    width = max(len(name) for name in names)
    for name in names:
        typer.echo(f"{name:<{width}}  {attack_options.attack_summary_line(name)}")


app.command("attacks", cls=Command)(handle_errors(attacks_command))
app.command("attack", cls=Command)(handle_errors(attack))
app.command("train", cls=Command)(handle_errors(train))
app.command("demo", cls=Command)(handle_errors(demo))
app.command("evaluate", cls=Command)(handle_errors(evaluate_command))
app.command("report", cls=Command)(handle_errors(report_command))
app.command("compare", cls=Command)(handle_errors(compare_command))
app.command("harden", cls=Command)(handle_errors(harden_command))
app.command("detect", cls=Command)(handle_errors(detect_command))
app.command("certify", cls=Command)(handle_errors(certify_command))
app.command("membership", cls=Command)(handle_errors(membership_command))
app.command("steal", cls=Command)(handle_errors(steal_command))
app.command("poison", cls=Command)(handle_errors(poison_command))
app.command("scan-data", cls=Command)(handle_errors(scan_data_command))
app.command("serve", cls=Command)(handle_errors(serve_command))


def main() -> None:
    """Entry point of the ``pixelguard`` console script."""
    app(prog_name="pixelguard")
