"""Keeping third-party noise off the user's terminal around calls that may fail on the user's files.

Loading a damaged model or checkpoint makes torch print warnings (Python `warnings`), log a whole traceback
(`logging`, e.g. torch.export's "Ran into the following error when deserializing") and sometimes write to
file descriptor 2 from C++; the failure itself is then reported as one line by the caller. `quiet()` silences
all three for the duration of the call; `first_sentence()` gives the part of a library's message worth
showing.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from typing import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Inside: no Python warnings, no log records, nothing written to stderr (fd 2 goes to a discarded
    temporary file). Use around one library call, not around code that reports to the user."""
    previous_disable = logging.root.manager.disable
    sys.stderr.flush()
    saved_fd = _dup_stderr()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.disable(logging.CRITICAL)
            with tempfile.TemporaryFile() as sink:
                if saved_fd is not None:
                    os.dup2(sink.fileno(), 2)
                try:
                    yield
                finally:
                    if saved_fd is not None:
                        sys.stderr.flush()
                        os.dup2(saved_fd, 2)
    finally:
        logging.disable(previous_disable)
        if saved_fd is not None:
            os.close(saved_fd)


def _dup_stderr() -> int | None:
    try:
        return os.dup(2)
    except OSError:  # no fd 2 (a daemon): nothing to protect
        return None


def first_sentence(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message, cut after its first sentence when torch appends advice
    ("... not a ZIP archive. This is an internal miniz error. If you are seeing ..."); never empty."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    head, sep, _ = text.partition(". ")
    if sep and len(head) >= 20:
        text = head
    return text if len(text) <= limit else text[: limit - 3] + "..."
