"""A one-line progress bar on stderr (redrawn in place on a terminal, sparse lines otherwise)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    """Return seconds as ``m:ss`` or ``h:mm:ss``."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class ProgressBar:
    """``label [#####.....] 12/50 0:07<0:22 loss 2.31 ...``, at most ten redraws a second."""

    def __init__(
        self,
        total: int,
        label: str = "",
        start: int = 0,
        stream: TextIO | None = None,
        width: int = 24,
        enabled: bool = True,
    ):
        self.total = max(total, 1)
        self.label = label
        self.count = start
        self.first = start
        self.stream = stream or sys.stderr
        self.width = width
        self.enabled = enabled
        self.interactive = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.began = time.perf_counter()
        self._last_draw = 0.0
        self._last_line_fraction = -1.0

    def update(self, count: int, info: str = "") -> None:
        """Show ``count`` of ``total`` done, with ``info`` after the bar."""
        self.count = count
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.interactive:
            if now - self._last_draw >= 0.1 or count >= self.total:
                self._last_draw = now
                self.stream.write("\r" + self._line(info) + "\x1b[K")
                self.stream.flush()
        elif count / self.total - self._last_line_fraction >= 0.25 or count >= self.total:
            # Logs and CI: a line at each quarter instead of hundreds of carriage returns.
            self._last_line_fraction = count / self.total
            self.stream.write(self._line(info) + "\n")
            self.stream.flush()

    def close(self, info: str = "") -> None:
        """Draw the final state and end the line."""
        if not self.enabled:
            return
        if self.interactive:
            self.stream.write("\r" + self._line(info) + "\x1b[K\n")
            self.stream.flush()

    def _line(self, info: str) -> str:
        filled = int(self.width * min(self.count, self.total) / self.total)
        elapsed = time.perf_counter() - self.began
        done = self.count - self.first
        remaining = elapsed / done * (self.total - self.count) if done > 0 else 0.0
        bar = "#" * filled + "." * (self.width - filled)
        timing = f"{format_duration(elapsed)}<{format_duration(remaining)}"
        return f"{self.label} [{bar}] {self.count}/{self.total} {timing} {info}".rstrip()
