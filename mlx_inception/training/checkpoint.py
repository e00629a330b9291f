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

A checkpoint is written into a hidden temporary folder and renamed, complete, to a name no other
checkpoint has (``step-00001234``, or ``step-00001234.1`` when that step was saved before); then
each link is replaced with one ``os.replace``; only then are the checkpoints no link names
deleted. A run killed at any moment leaves ``last`` naming a complete checkpoint, the previous
one or the new one. Where the file system has no symbolic links (exFAT, some network shares),
``last`` and ``best`` are small text files holding the folder's path relative to RUN_DIR, also
replaced atomically; ``resolve_link`` and ``load_checkpoint`` follow either.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..atomic import make_staging_dir
from ..checkpoints.store import save_weights, write_safetensors
from ..errors import CheckpointError
from ..model import InceptionV3Config

CHECKPOINTS = "checkpoints"
TRAINING_STATE = "training_state.safetensors"
TRAINER_STATE = "trainer_state.json"
FORMAT_VERSION = 1
# What trainer_state.json must hold for a run to resume.
REQUIRED_STATE = ("epoch", "step_in_epoch", "step", "best_val_top1", "best_epoch", "totals",
                  "config")


def save_checkpoint(
    run_dir: str | os.PathLike,
    name: str,
    weights: Mapping[str, mx.array],
    config: InceptionV3Config,
    arrays: Mapping[str, mx.array],
    state: dict[str, Any],
    links: Iterable[str] = ("last",),
) -> Path:
    """Write a checkpoint to a new folder, point the ``links`` at it and return the folder.

    Nothing a link names is deleted or overwritten before every link names the new, complete
    checkpoint (see the module's docstring).
    """
    run_dir = Path(run_dir)
    parent = run_dir / CHECKPOINTS
    parent.mkdir(parents=True, exist_ok=True)
    folder = _unused(parent, name)
    temporary = make_staging_dir(parent, f".{name}-")  # the usual permissions, not mkdtemp's
    try:
        mx.eval(dict(arrays), dict(weights))
        state_file = temporary / TRAINING_STATE
        write_safetensors(state_file, arrays)
        text = json.dumps({"format_version": FORMAT_VERSION, **state}, indent=2) + "\n"
        save_weights(temporary, weights, config, extra_files={TRAINER_STATE: text})
        os.replace(temporary, folder)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    for link in links:
        point(run_dir, link, folder)
    prune(run_dir, also_keep=folder)
    return folder


def _unused(parent: Path, name: str) -> Path:
    """Return ``parent/name``, or ``parent/name.N`` with the first N that no folder has."""
    candidate, number = parent / name, 0
    while candidate.exists() or candidate.is_symlink():
        number += 1
        candidate = parent / f"{name}.{number}"
    return candidate


def point(run_dir: Path, link: str, folder: Path) -> None:
    """Atomically make ``run_dir/link`` name ``folder``: a relative symbolic link, or a pointer
    file holding the relative path where the file system has no symbolic links."""
    target = os.path.relpath(folder, run_dir)
    temporary = run_dir / f".{link}.tmp"
    temporary.unlink(missing_ok=True)
    try:
        os.symlink(target, temporary)
    except (OSError, NotImplementedError):
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(target + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temporary, run_dir / link)
    _fsync_dir(run_dir)


# What save_checkpoint names its folders (step-00001234, step-00001234.1) and their temporary
# folders (.step-00001234-<random>): the only entries prune may delete.
_CHECKPOINT_NAME = re.compile(r"step-\d{8}(\.\d+)?|\.step-\d{8}(\.\d+)?-\w+")


def prune(run_dir: Path, also_keep: Path | None = None) -> None:
    """Delete checkpoints no link names (and ``also_keep``), and temporary folders of
    interrupted writes. Anything else in the folder (a user's own files) is left alone."""
    keep = {resolve_link(run_dir, link) for link in ("last", "best")}
    if also_keep is not None:
        keep.add(also_keep.resolve())
    folder = run_dir / CHECKPOINTS
    for entry in folder.iterdir():
        if _CHECKPOINT_NAME.fullmatch(entry.name) and entry.resolve() not in keep:
            shutil.rmtree(entry, ignore_errors=True)


def resolve_link(run_dir: Path, link: str) -> Path | None:
    """Return the checkpoint folder ``run_dir/link`` names (a symbolic link or a pointer
    file), or None."""
    return _follow(Path(run_dir) / link)


def _follow(path: Path) -> Path | None:
    """Return the folder ``path`` is or names (via a symbolic link or a pointer file), or None."""
    if path.is_dir():
        return path.resolve()
    if path.is_file() and not path.is_symlink() and path.stat().st_size < 4096:
        try:
            target = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        folder = path.parent / target
        if target and folder.is_dir():
            return folder.resolve()
    return None


def load_checkpoint(folder: str | os.PathLike) -> tuple[dict[str, mx.array], dict[str, Any]]:
    """Return (arrays, state) of a checkpoint folder (or of a run's ``last``/``best`` link)."""
    folder = _follow(Path(folder)) or Path(folder)
    state_path, arrays_path = folder / TRAINER_STATE, folder / TRAINING_STATE
    if not state_path.is_file() or not arrays_path.is_file():
        raise CheckpointError(
            f"{folder} is not a training checkpoint (needs {TRAINER_STATE} and {TRAINING_STATE})"
        )
    damaged = f"{folder}: damaged checkpoint"
    what_now = "restore the folder from a copy or start a new run"
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        arrays = mx.load(str(arrays_path))
    except (OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{damaged} ({error}); {what_now}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{damaged} ({TRAINER_STATE} is not a JSON object); {what_now}")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{folder}: checkpoint format {state.get('format_version')} is not "
            f"{FORMAT_VERSION}; resume it with the version of mlx-inception that wrote it"
        )
    missing = [key for key in REQUIRED_STATE if key not in state]
    if missing:
        raise CheckpointError(
            f"{damaged} ({TRAINER_STATE} lacks {', '.join(missing)}); {what_now}"
        )
    return arrays, state


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
