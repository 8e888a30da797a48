"""SIGTERM as an exception, so a terminated command unwinds like Ctrl-C: atomic writes remove
their temporary files (pgolf.fileio), staging directories are cleaned up, and the command line
reports the stop in one line instead of dying mid-write with half-written files left behind."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (a KeyboardInterrupt, so `except Exception` handlers let it through)."""

    exit_code = 128 + signal.SIGTERM


@contextlib.contextmanager
def sigterm_raises(error: Callable[[int], BaseException] = lambda signum: Terminated("SIGTERM")) -> Iterator[None]:
    """Within the block, SIGTERM raises `error(signum)` in the main thread (elsewhere no handler
    can be set, and the block runs unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise error(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
