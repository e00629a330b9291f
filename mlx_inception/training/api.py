"""``mlx_inception.train``: a training run from Python, the one ``mlx-inception train`` runs.

The command parses its flags and calls ``train``; a notebook calls it with the same settings as
keyword arguments (the flags' names with underscores). Both resolve one ``TrainConfig`` and run
one ``Trainer``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import mlx.core as mx

from .distributed import init_group, peer_failures
from .recipe import ConfigError, load_config_file, resolve
from .trainer import Trainer


def train(
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    *,
    resume: str | os.PathLike | None = None,
    config_file: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    group: mx.distributed.Group | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Return the summary of a training run: run_dir, epochs_completed, steps, stopped (None,
    "max_steps" or "interrupted"), best_val_top1, best_epoch, compile_seconds, last_metrics.

    Trains on the ImageFolder ``data`` (DIR/<class>/<images>) into the run folder ``out``, or
    with ``resume`` continues that run folder's last checkpoint. ``settings`` are
    ``TrainConfig``'s fields, the command's flags with underscores (``epochs=5``,
    ``image_size=75``, ``val="digits/val"``, ``init="inception_v3.tv_in1k"``, ``recipe="paper"``;
    ``learning_rate`` is ``--lr``); unset ones take the recipe's defaults, and a resumed run may
    change only ``epochs``, ``max_steps``, ``workers``, ``prefetch`` and ``compile``.
    ``config_file`` is ``--config``'s JSON file (keyword arguments win). ``progress`` shows the
    progress bar; ``log`` receives the notes and epoch lines (default: printed to stderr).
    Errors are ``mlx_inception.errors.InceptionError``s with one line saying what to do.
    """
    group = group if group is not None else init_group()
    if log is None:
        def log(message: str) -> None:
            print(message, file=sys.stderr)
    options = {"group": group, "show_progress": progress, "log": log}
    given = {"data": data, "out": out, **settings}
    given = {k: os.fspath(v) if isinstance(v, os.PathLike) else v
             for k, v in given.items() if v is not None}
    with peer_failures():
        if resume is not None:
            if config_file is not None:
                raise ConfigError(
                    "--config cannot change a resumed run; drop it or start a new run")
            trainer = Trainer.resume(resume, given, **options)
        else:
            chosen = load_config_file(config_file) if config_file is not None else {}
            chosen.update(given)
            config, notes = resolve(chosen, world_size=group.size())
            trainer = Trainer(config, notes=notes, **options)
        return trainer.fit()
