"""The per-step log ``RUN_DIR/steps.jsonl``: a JSON line every few steps, so that a short run has
more than one point per epoch.

Each line is {"step", "epoch", "loss", "learning_rate", "images_per_second"}: the mean training
loss and the throughput of the steps since the previous line, the rate of the line's step, and
the epoch (from 1) that step belongs to. A line is written after every step of an epoch of up to
``LINES_PER_EPOCH`` steps, else after every ``steps_per_epoch // LINES_PER_EPOCH`` steps and at
the epoch's end, so an ImageNet-sized run writes about a hundred lines an epoch, not 40,000.

Lines are appended with one ``write`` each to a file opened with ``O_APPEND``: a killed process
leaves whole lines, at most one cut-off line last when the disk fills, and after that the log
stops for the run. Lines are written after the step, before any checkpoint of it, so the file
is never behind the last checkpoint; at every start (``restore``) it is cut back to the
checkpoint's step (and a cut-off last line dropped), as a resumed run repeats the steps after it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..atomic import write_text_atomically
from ..errors import InceptionError
from .history import EpochTotals

STEPS_FILE = "steps.jsonl"
LINES_PER_EPOCH = 100


def step_line(
    epoch: int, step: int, step_in_epoch: int, steps_per_epoch: int, totals: EpochTotals,
    learning_rate: Callable[[int], float],
) -> dict[str, Any] | None:
    """Return the line due after step ``step`` (counted in ``totals``), or None when none is;
    a line marks ``totals`` as logged up to this step (the marks travel in checkpoints)."""
    every = max(1, steps_per_epoch // LINES_PER_EPOCH)
    steps = totals.steps - totals.logged_steps
    if steps <= 0 or (step_in_epoch % every and step_in_epoch != steps_per_epoch):
        return None
    seconds = totals.seconds - totals.logged_seconds
    images = totals.timed_images - totals.logged_timed_images
    line = {
        "step": step,
        "epoch": epoch + 1,
        "loss": (totals.loss - totals.logged_loss) / steps,
        "learning_rate": learning_rate(step - 1),  # the rate the step was taken with
        # None for a line of the first step alone: its time is the compile's, not a step's.
        "images_per_second": images / seconds if images and seconds > 0 else None,
    }
    totals.logged_steps, totals.logged_loss = totals.steps, totals.loss
    totals.logged_seconds, totals.logged_timed_images = totals.seconds, totals.timed_images
    return line


class StepLog:
    """Appends lines to ``RUN_DIR/steps.jsonl``; a failed write is reported once and ends the
    log for this run (training goes on: metrics.jsonl and the checkpoints keep the epochs)."""

    def __init__(self, run_dir: Path, warn: Callable[[str], None], enabled: bool = True):
        self.path = Path(run_dir) / STEPS_FILE
        self._warn = warn
        self.failed = not enabled  # only the first process writes

    def after_step(self, progress: Any, steps_per_epoch: int,
                   schedule: Callable[[mx.array], mx.array]) -> None:
        """Write the line due after the step just counted in ``progress``, if one is (every
        process marks its totals alike, whether or not it writes)."""
        self.append(step_line(progress.epoch, progress.step, progress.step_in_epoch,
                              steps_per_epoch, progress.totals,
                              lambda n: float(schedule(mx.array(n)).item())))

    def append(self, line: dict[str, Any] | None) -> None:
        if line is None or self.failed:
            return
        data = (json.dumps(line) + "\n").encode()
        try:
            handle = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                if os.write(handle, data) != len(data):
                    raise OSError("only part of a line was written (is the disk full?)")
            finally:
                os.close(handle)
        except OSError as error:
            self.failed = True
            self._warn(f"{self.path}: cannot append ({error}); no more step lines this run")

    def restore(self, step: int) -> None:
        """Cut the log back to the lines of steps up to ``step`` (the checkpoint's; 0 for a new
        run), dropping a cut-off last line; damaged lines are dropped with a warning."""
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as error:
            self._warn(f"{self.path}: cannot read ({error}); written anew")
            text = b""
        kept, damaged = [], 0
        for raw in text.split(b"\n")[:-1]:  # the piece after the last newline is cut off
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if not (isinstance(record, dict) and isinstance(record.get("step"), int)):
                damaged += 1
            elif record["step"] <= step:
                kept.append(raw.decode() + "\n")
        if damaged:
            self._warn(f"{self.path}: dropped {damaged} damaged line(s)")
        if "".join(kept).encode() == text:
            return
        try:
            if kept:
                write_text_atomically(self.path, "".join(kept))
            else:
                self.path.unlink()
        except (OSError, InceptionError) as error:
            self.failed = True
            self._warn(f"{self.path}: cannot rewrite ({error}); no step lines this run")
