"""The one progress bar of the command line: one line on stderr, redrawn in place on a terminal.

``label [#####.....] 12/50 0:07<0:22 5.6 img/s``. Piped to a file, it is either silent (predict,
evaluate, fid: their output is the data) or, with ``piped_lines=True`` (training, whose logs are
read later), a line at each quarter instead of hundreds of carriage returns.
"""

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
    """A progress bar for ``total`` items, redrawn at most ten times a second.

    ``rate_unit`` (``"img"``): show the rate after the bar when the caller gives no ``info``.
    ``enabled=False`` (``--quiet``) draws nothing. Calling the bar, ``bar(done, total)``, is
    ``update``: it can be handed to code that reports progress that way.
    """

    def __init__(
        self,
        total: int,
        label: str = "",
        start: int = 0,
        stream: TextIO | None = None,
        width: int = 24,
        enabled: bool = True,
        rate_unit: str | None = None,
        piped_lines: bool = False,
    ):
        self.total = max(total, 1)
        self.label = label
        self.count = start
        self.first = start
        self.stream = stream or sys.stderr
        self.width = width
        self.rate_unit = rate_unit
        self.interactive = enabled and getattr(self.stream, "isatty", lambda: False)()
        self.enabled = self.interactive or (enabled and piped_lines)
        self.began = time.perf_counter()
        self._last_draw = 0.0
        self._last_line_fraction = -1.0
        self._drawn = False
        self._closed = False

    def update(self, count: int, total: int | None = None, info: str = "") -> None:
        """Show ``count`` of ``total`` (given at construction, unless changed here) done."""
        self.count = count
        if total is not None:
            self.total = max(total, 1)
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.interactive:
            if count >= self.total:
                self.close(info)
            elif now - self._last_draw >= 0.1:
                self._last_draw = now
                self._write("\r" + self._line(info) + "\x1b[K")
        elif count / self.total - self._last_line_fraction >= 0.25 or count >= self.total:
            self._last_line_fraction = count / self.total
            self._write(self._line(info) + "\n")

    __call__ = update

    def clear(self) -> None:
        """Erase the bar, so that a line printed next is not mixed with it (it is redrawn at
        the next update)."""
        if self.interactive and self._drawn:
            self._write("\r\x1b[K")
            self._last_draw = 0.0

    def close(self, info: str = "") -> None:
        """Draw the final state and end the line (once: reaching ``total`` closes the bar)."""
        if self.interactive and not self._closed:
            self._write("\r" + self._line(info) + "\x1b[K\n")
            self._closed = True

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
        self._drawn = not text.endswith("\n") and text != "\r\x1b[K"

    def _line(self, info: str) -> str:
        filled = int(self.width * min(self.count, self.total) / self.total)
        elapsed = time.perf_counter() - self.began
        done = self.count - self.first
        remaining = elapsed / done * (self.total - self.count) if done > 0 else 0.0
        if not info and self.rate_unit and elapsed > 0:
            info = f"{done / elapsed:.1f} {self.rate_unit}/s"
        bar = "#" * filled + "." * (self.width - filled)
        timing = f"{format_duration(elapsed)}<{format_duration(remaining)}"
        return f"{self.label} [{bar}] {self.count}/{self.total} {timing} {info}".rstrip()
