"""Training checkpoints: a loadable weights directory plus everything needed to resume.

::

    RUN_DIR/checkpoints/step-00001234/
        model.safetensors, config.json   the evaluated weights (the moving average when it is
                                         on), readable by ``mlx_inception.load``
        training_state.safetensors       the raw weights and BatchNorm statistics, the
                                         optimizer state, the moving average, the MLX RNG key
        trainer_state.json               epoch, step, position in the epoch, best accuracy,
                                         running totals of the epoch, seed, resolved config
    RUN_DIR/last -> checkpoints/step-...   (symbolic links, replaced atomically)
    RUN_DIR/best -> checkpoints/step-...

A checkpoint is written into a hidden temporary folder and renamed into place when complete;
then the ``last``/``best`` link is swapped with one ``os.replace``. A run killed at any moment
leaves ``last`` pointing at a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..checkpoints.store import save_weights
from ..errors import CheckpointError
from ..model import InceptionV3Config

CHECKPOINTS = "checkpoints"
TRAINING_STATE = "training_state.safetensors"
TRAINER_STATE = "trainer_state.json"
FORMAT_VERSION = 1


def save_checkpoint(
    run_dir: str | os.PathLike,
    name: str,
    weights: Mapping[str, mx.array],
    config: InceptionV3Config,
    arrays: Mapping[str, mx.array],
    state: dict[str, Any],
    links: Iterable[str] = ("last",),
) -> Path:
    """Write a checkpoint atomically, point the ``links`` at it and return its folder."""
    run_dir = Path(run_dir)
    folder = run_dir / CHECKPOINTS / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        mx.eval(dict(arrays), dict(weights))
        state_file = temporary / TRAINING_STATE
        mx.save_safetensors(str(state_file), dict(arrays))
        _fsync(state_file)
        text = json.dumps({"format_version": FORMAT_VERSION, **state}, indent=2) + "\n"
        save_weights(temporary, weights, config, extra_files={TRAINER_STATE: text})
        if folder.exists():  # the same step saved again (e.g. interrupted right after an epoch)
            shutil.rmtree(folder)
        os.replace(temporary, folder)
        _fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    for link in links:
        point(run_dir, link, folder)
    prune(run_dir)
    return folder


def point(run_dir: Path, link: str, folder: Path) -> None:
    """Atomically make ``run_dir/link`` a relative symbolic link to ``folder``."""
    temporary = run_dir / f".{link}.tmp"
    temporary.unlink(missing_ok=True)
    os.symlink(os.path.relpath(folder, run_dir), temporary)
    os.replace(temporary, run_dir / link)
    _fsync_dir(run_dir)


def prune(run_dir: Path) -> None:
    """Delete checkpoints no link points at, and temporary folders of interrupted writes."""
    keep = {resolve_link(run_dir, link) for link in ("last", "best")}
    folder = run_dir / CHECKPOINTS
    for entry in folder.iterdir():
        if entry.resolve() not in keep:
            shutil.rmtree(entry, ignore_errors=True)


def resolve_link(run_dir: Path, link: str) -> Path | None:
    """Return the checkpoint folder ``run_dir/link`` points at, or None."""
    path = run_dir / link
    return path.resolve() if path.is_dir() else None


def load_checkpoint(folder: str | os.PathLike) -> tuple[dict[str, mx.array], dict[str, Any]]:
    """Return (arrays, state) of a checkpoint folder (or of a run's ``last`` link)."""
    folder = Path(folder)
    state_path, arrays_path = folder / TRAINER_STATE, folder / TRAINING_STATE
    if not state_path.is_file() or not arrays_path.is_file():
        raise CheckpointError(
            f"{folder} is not a training checkpoint (needs {TRAINER_STATE} and {TRAINING_STATE})"
        )
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        arrays = mx.load(str(arrays_path))
    except (OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{folder}: damaged checkpoint ({error})") from None
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{folder}: checkpoint format {state.get('format_version')} is not "
            f"{FORMAT_VERSION}; resume it with the version of mlx-inception that wrote it"
        )
    return arrays, state


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    # Makes the rename durable on POSIX; directories cannot be opened this way everywhere.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
