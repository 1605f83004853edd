"""Errors the CLI turns into one line on stderr and an exit code, and signals turned into errors."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

# Exit codes, documented in the README. A signal ends the run with 128 + its number.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_OUT_OF_MEMORY = 3
EXIT_BUSY = 75  # sysexits' EX_TEMPFAIL: another run holds the output; try again later


class LatentwalkError(Exception):
    """A failure to report to the user as one line, without a traceback."""

    exit_code = EXIT_FAILURE


class BadInput(LatentwalkError):
    """The user asked for something that cannot be done: bad option, file or model name."""

    exit_code = EXIT_USAGE


class Busy(LatentwalkError):
    """Another live latentwalk holds a lock on the same output or frames."""

    exit_code = EXIT_BUSY


class OutOfMemory(LatentwalkError):
    exit_code = EXIT_OUT_OF_MEMORY


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way up mistakes it for a failure."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Cancelled(BaseException):
    """A run stopped on request (the studio's cancel): its finished renders stay, to resume."""

    exit_code = 130


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, the handled signals raise Interrupted in the main thread, so the run
    unwinds through its cleanup (ffmpeg stopped, frames kept, locks released)."""

    def handler(signum, frame):
        raise Interrupted(signum)

    if threading.current_thread() is not threading.main_thread():
        yield  # a server's worker thread: signals are the server's to handle
        return
    previous = {s: signal.signal(s, handler) for s in HANDLED_SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def is_out_of_memory(error: BaseException) -> bool:
    """torch reports GPU OOM as its own class, and a failed CPU allocation as a RuntimeError."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in text.lower() or "can't allocate memory" in text or "not enough memory" in text
    )
