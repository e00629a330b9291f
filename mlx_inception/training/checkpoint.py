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

``resume_point`` reads a run's last checkpoint back with its configuration; ``checkpoint_arrays``
and ``restore_arrays``, ``trainer_state`` and ``progress_from_state`` are each other's inverse, so
a resumed run continues bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.optimizers import Optimizer
from mlx.utils import tree_flatten, tree_unflatten

from ..atomic import make_staging_dir
from ..checkpoints.local import follow_pointer
from ..checkpoints.store import (
    model_weights,
    read_config,
    write_safetensors,
    write_weights_files,
)
from ..errors import CheckpointError
from ..jsonfile import read_json
from ..model import InceptionV3, InceptionV3Config
from .history import EpochTotals
from .recipe import ConfigError, TrainConfig, absolute_paths

CHECKPOINTS = "checkpoints"
TRAINING_STATE = "training_state.safetensors"
TRAINER_STATE = "trainer_state.json"
FORMAT_VERSION = 1
# What trainer_state.json must hold for a run to resume.
REQUIRED_STATE = ("epoch", "step_in_epoch", "step", "best_val_top1", "best_epoch", "totals",
                  "config")
CONFIG_FILE = "train_config.json"
# Settings a resumed run may change: they do not alter what is computed.
RESUMABLE_OVERRIDES = ("epochs", "max_steps", "workers", "prefetch", "compile")


@dataclass
class Progress:
    """Where the run stands: what a checkpoint must restore besides arrays."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # steps of the current epoch completed
    step: int = 0  # optimizer steps completed in total
    best_val_top1: float | None = None
    best_epoch: int | None = None
    totals: EpochTotals = field(default_factory=EpochTotals)


def checkpoint_arrays(
    model: InceptionV3, optimizer: Optimizer, average: dict[str, mx.array]
) -> dict[str, mx.array]:
    """Return the arrays a checkpoint saves: raw weights and statistics, optimizer state and
    moving average, under the prefixes ``model/``, ``optimizer/`` and ``ema/``."""
    arrays = {f"model/{k}": v for k, v in model_weights(model).items()}
    arrays.update({f"optimizer/{k}": v for k, v in tree_flatten(optimizer.state)})
    arrays.update({f"ema/{k}": v for k, v in average.items()})
    return arrays


def restore_arrays(
    arrays: dict[str, mx.array], model: InceptionV3, optimizer: Optimizer,
    average: dict[str, mx.array],
) -> None:
    """Load ``checkpoint_arrays``' output back into the model, optimizer and moving average."""
    def part(prefix: str) -> dict[str, mx.array]:
        return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

    try:
        model.load_weights(list(part("model/").items()), strict=True)
    except ValueError as error:
        raise CheckpointError(f"the checkpoint does not fit the network ({error})") from None
    # The optimizer (already initialised for this network) and the moving average must get
    # exactly their own slots back: a slot of shape (1,) would broadcast in silence.
    saved_optimizer, saved_average = part("optimizer/"), part("ema/")
    _check_same_arrays("optimizer", saved_optimizer, dict(tree_flatten(optimizer.state)))
    if average:
        _check_same_arrays("moving average", saved_average, average)
    optimizer.state = tree_unflatten(list(saved_optimizer.items()))
    average.clear()
    average.update(saved_average)


def _check_same_arrays(
    what: str, saved: Mapping[str, mx.array], expected: Mapping[str, mx.array]
) -> None:
    """Raise CheckpointError unless ``saved`` has ``expected``'s keys, shapes and float kind."""
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    if missing or unexpected:
        names = ", ".join((missing or unexpected)[:3])
        raise CheckpointError(
            f"the checkpoint's {what} state does not fit the network ("
            f"{'missing' if missing else 'unexpected'} {names}); {_WHAT_NOW}"
        )
    for key, value in expected.items():
        got = saved[key]
        if tuple(got.shape) != tuple(value.shape) or (
            mx.issubdtype(value.dtype, mx.floating) != mx.issubdtype(got.dtype, mx.floating)
        ):
            raise CheckpointError(
                f"the checkpoint's {what} slot {key} is {got.dtype} {tuple(got.shape)}, not "
                f"{value.dtype} {tuple(value.shape)}; {_WHAT_NOW}"
            )


_WHAT_NOW = "restore the folder from a copy or start a new run"


def trainer_state(
    progress: Progress, config: TrainConfig, fingerprint: str, averaged: bool,
    metrics: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """Return what ``trainer_state.json`` holds: the progress, the seed, the data's
    fingerprint, the records of every finished epoch and the configuration."""
    return {
        "epoch": progress.epoch,
        "step_in_epoch": progress.step_in_epoch,
        "step": progress.step,
        "best_val_top1": progress.best_val_top1,
        "best_epoch": progress.best_epoch,
        "totals": progress.totals.to_dict(),
        "seed": config.seed,
        "data_fingerprint": fingerprint,
        "evaluated_weights": "moving average" if averaged else "trained",
        "metrics": list(metrics),
        "config": config.to_dict(),
    }


def progress_from_state(state: dict[str, Any], steps_per_epoch: int | None = None) -> Progress:
    """Return the ``Progress`` a ``trainer_state.json`` records (checked by ``load_checkpoint``);
    with ``steps_per_epoch``, one whose position lies within an epoch of that many steps."""
    totals = state["totals"]
    fields_of_totals = set(EpochTotals.__dataclass_fields__)
    if not (isinstance(totals, dict) and set(totals) <= fields_of_totals
            and all(_is_count(v) or _is_finite(v) for v in totals.values())):
        raise CheckpointError(f"the checkpoint's running totals are damaged; {_WHAT_NOW}")
    totals = EpochTotals(**totals)
    if steps_per_epoch is not None and state["step_in_epoch"] > steps_per_epoch:
        raise CheckpointError(
            f"the checkpoint stands at step {state['step_in_epoch']} of an epoch of "
            f"{steps_per_epoch} steps: damaged, or the training images changed; {_WHAT_NOW}"
        )
    return Progress(
        epoch=state["epoch"], step_in_epoch=state["step_in_epoch"], step=state["step"],
        best_val_top1=state["best_val_top1"], best_epoch=state["best_epoch"], totals=totals,
    )


def data_fingerprint(samples: Sequence[tuple[Path, int]], root: str) -> str:
    """Return a digest of the training images (paths within ``root``) and labels."""
    digest = hashlib.sha256()
    for path, label in samples:
        digest.update(f"{os.path.relpath(path, root)}\0{label}\n".encode())
    return digest.hexdigest()[:16]


def resume_point(
    run_dir: str | os.PathLike, overrides: dict[str, Any] | None = None
) -> tuple[TrainConfig, InceptionV3Config, dict[str, mx.array], dict[str, Any]]:
    """Return the configuration (with ``overrides`` applied), network configuration, arrays
    and state of ``run_dir``'s last checkpoint.

    Only ``RESUMABLE_OVERRIDES`` may change; ``max_steps`` 0 lifts the limit.
    """
    run_dir = Path(os.path.abspath(os.path.expanduser(run_dir)))
    folder = resolve_link(run_dir, "last")
    if folder is None:
        raise CheckpointError(
            f"{run_dir} has no checkpoint to resume (no {run_dir / 'last'}); start a new "
            "run instead"
        )
    arrays, state = load_checkpoint(folder)
    data = dict(state["config"])
    data.update(absolute_paths(data))  # runs saved before paths were stored absolute
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    overrides.update(absolute_paths(overrides))
    if overrides.get("max_steps") == 0:
        overrides["max_steps"] = None  # lifts the limit
        if data.get("max_steps") is None:
            del overrides["max_steps"]
    changed = {k: v for k, v in overrides.items() if data.get(k) != v}
    refused = sorted(set(changed) - set(RESUMABLE_OVERRIDES))
    if refused:
        raise ConfigError(
            f"a resumed run keeps its settings ({run_dir / CONFIG_FILE}); only "
            f"{', '.join(RESUMABLE_OVERRIDES)} may change, not {', '.join(refused)}"
        )
    data.update(changed)
    data["given"] = sorted(set(data.get("given", [])) | set(changed))
    data["out"] = str(run_dir)
    return TrainConfig.from_dict(data), read_config(folder), arrays, state


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
        write_weights_files(temporary, weights, config, extra_files={TRAINER_STATE: text})
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
# folders (.step-00001234-<pid>-<random>; ..step-00001234-<random>-<random> from versions that
# staged the weights inside them): the only entries prune may delete.
_CHECKPOINT_NAME = re.compile(
    r"step-\d{8}(\.\d+)?|\.{1,2}step-\d{8}(\.\d+)?-[\w-]+"
)


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
    if path.is_symlink():
        return None
    try:
        folder = follow_pointer(path)
    except CheckpointError:  # it points nowhere: no checkpoint there
        return None
    return folder.resolve() if folder is not None else None


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
        state = read_json(state_path, CheckpointError, f"{folder}: {TRAINER_STATE}")
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
    problem = _state_problem(state)
    if problem:
        raise CheckpointError(f"{damaged} ({TRAINER_STATE}: {problem}); {what_now}")
    return arrays, state


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_finite(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def _state_problem(state: dict[str, Any]) -> str | None:
    """Return what is wrong with a ``trainer_state.json``'s values (types and ranges), or None."""
    for key in ("epoch", "step_in_epoch", "step"):
        if not _is_count(state[key]):
            return f"{key} is {state[key]!r:.40}, not a whole number >= 0"
    if state["step_in_epoch"] > state["step"]:
        return f"step_in_epoch {state['step_in_epoch']} is past step {state['step']}"
    best, best_epoch = state["best_val_top1"], state["best_epoch"]
    if best is not None and not (_is_finite(best) and 0 <= best <= 1):
        return f"best_val_top1 is {best!r:.40}, not a fraction"
    if best_epoch is not None and not (_is_count(best_epoch) and best_epoch <= state["epoch"]):
        return f"best_epoch is {best_epoch!r:.40}, not a finished epoch"
    if not isinstance(state["config"], dict):
        return "config is not an object of settings"
    if "seed" in state and state["seed"] is not None and not isinstance(state["seed"], int):
        return f"seed is {state['seed']!r:.40}, not a whole number"
    metrics = state.get("metrics")
    if metrics is not None and not (
        isinstance(metrics, list)
        and all(isinstance(m, dict) and _is_count(m.get("epoch")) for m in metrics)
    ):
        return "metrics is not a list of epoch records (each with its epoch)"
    return None


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
