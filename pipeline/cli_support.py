"""Shared CLI behaviour: every user mistake is one line on stderr and a non-zero exit, no traceback."""
from __future__ import annotations

import functools
import os
import sys
from typing import Any, Callable

import click

from .errors import DepthmaskError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class OneLineCommand(click.Command):
    """Click's usage errors, reduced to one line that names the option and what is wrong."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("standalone_mode", True)
        try:
            return super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.Abort:
            fail("interrupted", EXIT_INTERRUPTED)
        except click.UsageError as exc:
            fail(f"{exc.format_message()} (see {exc.ctx.command_path if exc.ctx else self.name} --help)", EXIT_USAGE)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn DepthmaskError, Ctrl-C and unexpected crashes into one line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DepthmaskError as exc:
            name, message = unwrap_message(exc)
            fail(message if name == "DepthmaskError" else f"unexpected {name}: {message}")
        except KeyboardInterrupt:
            fail("interrupted; run the same command again to resume", EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001
            if os.environ.get("DEPTHMASK_DEBUG"):
                raise
            name, message = unwrap_message(exc)
            if name == "DepthmaskError":  # raised in a worker, re-raised by torch as another type
                fail(message)
            if _BUS_ERROR in message:
                fail("a data-loading worker was killed by a bus error (SIGBUS) while reading a memory-mapped "
                     "dataset file: a file was truncated or replaced while in use; check the dataset with "
                     "dm-stats --verify")
            fail(f"unexpected {name}: {message} (set DEPTHMASK_DEBUG=1 to see the traceback)")

    return wrapper


_ORIGINAL_TRACEBACK = "\nOriginal Traceback (most recent call last):"
_BUS_ERROR = "is killed by signal: Bus error"


def unwrap_message(exc: BaseException) -> tuple[str, str]:
    """(type name, one-line message) of the error a user should see. An exception raised in a DataLoader worker
    reaches the main process as torch's "Caught X in DataLoader worker process N. Original Traceback ..."
    (of type X, or RuntimeError when X cannot be rebuilt): the original type and message are the last line of
    that traceback, so a worker's error reads the same as with --workers 0."""
    name, text = type(exc).__name__, str(exc)
    if _ORIGINAL_TRACEBACK in text:
        last = text.rstrip().splitlines()[-1]
        original, sep, message = last.partition(": ")
        if sep and " " not in original:
            name, text = original.rsplit(".", 1)[-1], message
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return name, (lines[0] if lines else "")
