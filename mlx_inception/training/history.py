"""The metrics of a run: running totals of an epoch, its record, and ``RUN_DIR/metrics.jsonl``.

``metrics.jsonl`` holds one JSON object per finished epoch, written atomically, and
``curves.png`` draws them.

Every checkpoint also holds the records of the epochs before it, and the trainer writes the file
after the checkpoint, so the file never shows an epoch whose checkpoint is missing; a resumed run
rewrites the file from its checkpoint. A run killed between the two writes therefore neither
loses nor repeats an epoch's line, and no reader ever meets a half-written line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomically
from ..errors import CheckpointError
from ..jsonfile import parse_json
from ..progress import format_duration
from .curves import draw_curves

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


@dataclass
class EpochTotals:
    """Running sums over the steps of the epoch in progress (saved in checkpoints)."""

    loss: float = 0.0
    correct: float = 0.0
    images: int = 0
    timed_images: int = 0  # images of the steps whose time is counted (not the compiling one)
    steps: int = 0
    seconds: float = 0.0
    wait_seconds: float = 0.0
    ready_steps: int = 0  # steps whose batch was decoded before the step asked for it
    # The totals when steps.jsonl last had a line (``steplog``): its next line is the difference.
    logged_steps: int = 0
    logged_loss: float = 0.0
    logged_seconds: float = 0.0
    logged_timed_images: int = 0

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def epoch_record(
    epoch: int, step: int, totals: EpochTotals, evaluation: dict[str, float | None],
    learning_rate: float,
) -> dict[str, Any]:
    """Return the metrics line of a finished epoch."""
    timed = totals.seconds > 0
    return {
        "epoch": epoch,
        "step": step,
        "train_loss": totals.loss / max(totals.steps, 1),
        "train_top1": totals.correct / max(totals.images, 1),
        **evaluation,
        "learning_rate": learning_rate,
        "images_per_second": totals.timed_images / totals.seconds if timed else None,
        "train_seconds": totals.seconds,
        "data_wait_seconds": totals.wait_seconds,
        # Share of the training time spent waiting for decoded images (0 = never starved).
        "data_wait_fraction": totals.wait_seconds / totals.seconds if timed else None,
        # Share of the steps whose batch the loader had decoded before the step asked.
        "data_ready_fraction": totals.ready_steps / max(totals.steps, 1),
    }


def progress_text(totals: EpochTotals) -> str:
    """Return the progress bar's running loss, top-1 and throughput ("" before any step)."""
    if totals.steps == 0:
        return ""
    info = (f"loss {totals.loss / totals.steps:.4f} "
            f"top-1 {100 * totals.correct / max(totals.images, 1):.1f}%")
    if totals.seconds > 0 and totals.timed_images:
        info += f" {totals.timed_images / totals.seconds:.1f} img/s"
    return info


def summary_line(record: dict[str, Any]) -> str:
    """Return the one line logged at the end of an epoch."""
    def pct(value):
        return "-" if value is None else f"{100 * value:.2f}%"

    line = f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}"
    rate = record.get("images_per_second")
    if not rate:
        return line
    return (f"{line}, val top-1 {pct(record['val_top1'])}, top-5 {pct(record['val_top5'])}, "
            f"{rate:.1f} img/s, waiting for data {pct(record['data_wait_fraction'])} of "
            f"{format_duration(record['train_seconds'])}")


def write_records(run_dir: Path, records: Sequence[dict[str, Any]]) -> None:
    """Write ``RUN_DIR/metrics.jsonl`` and redraw ``RUN_DIR/curves.png`` from ``records``."""
    write_metrics(run_dir / METRICS_FILE, records)
    draw_curves(records, run_dir / CURVES_FILE)


def restore_records(
    run_dir: Path, records: Sequence[dict[str, Any]], warn: Callable[[str], None]
) -> None:
    """Make metrics.jsonl hold exactly ``records``, a checkpoint's (a run killed after its
    checkpoint but before the file was written lacks the last epoch's line)."""
    path = run_dir / METRICS_FILE
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    except (OSError, UnicodeDecodeError):
        current = ""
    if current == metrics_text(records) or (current is None and not records):
        return
    if current is not None:
        warn(f"{path} did not match the last checkpoint (the run stopped while writing it); "
             f"rewritten from the checkpoint's {len(records)} epochs")
    write_records(run_dir, records)


def metrics_text(records: Sequence[dict[str, Any]]) -> str:
    """Return the contents of a metrics file holding ``records``: one JSON object a line."""
    return "".join(json.dumps(record) + "\n" for record in records)


def write_metrics(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> Path:
    """Write ``records`` to ``path`` atomically (the old file or the new one, never half of one)
    and return ``path``."""
    return write_text_atomically(path, metrics_text(records))


def read_metrics(
    path: str | os.PathLike, warn: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """Return the records of a metrics file, [] when there is none.

    A last line that is not a complete JSON object (a writer killed mid-line, as older versions
    that appended could leave) is dropped and reported to ``warn``; a damaged line before it is
    an error.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: cannot read the metrics ({error})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = parse_json(line, f"{path} line {number}", CheckpointError)
        except CheckpointError:
            record = None
        if isinstance(record, dict) and "epoch" in record:
            records.append(record)
        elif number == len(lines):
            if warn is not None:
                warn(f"{path}: dropped its last line, cut off while it was written")
        else:
            raise CheckpointError(
                f"{path}: line {number} is not an epoch's JSON record; delete that line"
            )
    return records
