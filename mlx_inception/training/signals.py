"""Ctrl-C and SIGTERM while training: the first asks for a stop after the step (with a
checkpoint), a second aborts at once."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Protocol


class Stoppable(Protocol):
    _stop_requested: bool

    def request_stop(self) -> None: ...

    def _say(self, message: str) -> None: ...


@contextlib.contextmanager
def stop_on_signals(trainer: Stoppable) -> Iterator[None]:
    """Make Ctrl-C (and SIGTERM) request a stop of ``trainer`` while the block runs; put back
    whatever handlers were there before (Python's, a caller's own, or SIG_IGN under nohup)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer._stop_requested:  # a second Ctrl-C: stop now, without saving
            raise KeyboardInterrupt
        trainer.request_stop()
        trainer._say("\nstopping after this step to save a checkpoint "
                     "(Ctrl-C again to abort without saving)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            # None: a handler not installed from Python, which cannot be put back.
            signal.signal(sig, signal.SIG_DFL if old is None else old)
