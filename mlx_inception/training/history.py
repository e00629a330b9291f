"""``RUN_DIR/metrics.jsonl``: one JSON object per finished epoch, written atomically.

Every checkpoint also holds the records of the epochs before it, and the trainer writes the file
after the checkpoint, so the file never shows an epoch whose checkpoint is missing; a resumed run
rewrites the file from its checkpoint. A run killed between the two writes therefore neither
loses nor repeats an epoch's line, and no reader ever meets a half-written line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomically
from ..errors import CheckpointError


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
            record = json.loads(line)
        except ValueError:
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
