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
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted; run the same command again to resume", EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001
            if os.environ.get("DEPTHMASK_DEBUG"):
                raise
            fail(f"unexpected {type(exc).__name__}: {exc} (set DEPTHMASK_DEBUG=1 to see the traceback)")

    return wrapper
