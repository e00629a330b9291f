"""The weights directory: ``model.safetensors`` (MLX layout) beside ``config.json``.

Writes are atomic: a new directory appears in one rename, fully written and fsynced; an existing
one is swapped for the complete new one in one step (``atomic.exchange_paths``), its other files
kept. Staging folders a killed writer left beside it (``.NAME-<pid>-xxxxxxxx``) are removed by
the next write there.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from ..atomic import (
    exchange_paths,
    explain_write_error,
    make_staging_dir,
    remove_stale_staging,
)
from ..errors import CheckpointError
from ..jsonfile import read_json
from ..model import InceptionV3, InceptionV3Config

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT = "mlx-inception"

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


def parse_dtype(name: str | mx.Dtype | None) -> mx.Dtype | None:
    """Return the MLX dtype for "float32", "float16" or "bfloat16" (None stays None)."""
    if name is None or isinstance(name, mx.Dtype):
        return name
    try:
        return DTYPES[str(name)]
    except KeyError:
        raise CheckpointError(
            f"unknown dtype {name!r}: choose one of {', '.join(DTYPES)}"
        ) from None


def is_weights_dir(path: str | os.PathLike) -> bool:
    """Return True if ``path`` is a directory in this project's format."""
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Return the ``__metadata__`` of a safetensors file's header ({} if none or unreadable).

    Reads the header only (8 bytes of length, then JSON), not the tensors.
    """
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100 * 2**20:  # far larger than any real header: not safetensors
                return {}
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError, RecursionError):  # deep nesting: not ours
        return {}
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def is_weights_file(path: str | os.PathLike) -> bool:
    """Return True if ``path`` is a ``.safetensors`` file written in this project's format.

    Such a file (``WEIGHTS_FILE`` of a weights directory) holds MLX-layout weights; it is
    loaded through its folder, never converted again.
    """
    path = Path(path)
    return (
        path.suffix.lower() == ".safetensors"
        and path.is_file()
        and safetensors_metadata(path).get("format") == FORMAT
    )


def model_weights(model: InceptionV3) -> dict[str, mx.array]:
    """Return the model's parameters and BatchNorm statistics as a flat, savable dict."""
    return dict(tree_flatten(model.parameters()))


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_safetensors(
    path: Path, arrays: Mapping[str, mx.array], metadata: dict[str, str] | None = None
) -> None:
    """Write ``arrays`` to ``path`` and fsync it; a failed write is one CheckpointError line.

    MLX reports a short write (disk full, quota, a vanished folder) as a bare RuntimeError that
    names neither the file nor the cause, so the free space is read and said here.
    """
    try:
        mx.save_safetensors(str(path), dict(arrays), metadata=metadata)
    except RuntimeError as error:
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free there"
        except OSError:
            free = "its folder is unreachable"
        raise CheckpointError(f"cannot write {path}: {error} ({free})") from None
    _fsync_file(path)


def write_weights_files(
    directory: str | os.PathLike,
    weights: Mapping[str, mx.array],
    config: InceptionV3Config,
    dtype: str | mx.Dtype | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> list[str]:
    """Write the files of a weights directory into ``directory`` (a fresh staging folder the
    caller renames into place); return their names, ``config.json`` last.

    With a half-precision ``dtype`` the BatchNorm statistics stay float32: in half precision
    ``running_var + eps`` loses the small variances that matter most.
    """
    directory = Path(directory)
    target = parse_dtype(dtype)
    arrays = {}
    for key, value in weights.items():
        keep_float32 = key.endswith(("running_mean", "running_var"))
        if target is not None and mx.issubdtype(value.dtype, mx.floating) and not keep_float32:
            value = value.astype(target)
        arrays[key] = value
    mx.eval(arrays)
    texts = {**(extra_files or {}), CONFIG_FILE: json.dumps(config.to_dict(), indent=2) + "\n"}
    write_safetensors(directory / WEIGHTS_FILE, arrays, metadata={"format": FORMAT})
    for name, text in texts.items():
        with open(directory / name, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    return [WEIGHTS_FILE, *texts]


def _keep_other_files(old: Path, new: Path) -> None:
    """Put the files of ``old`` that ``new`` lacks into ``new`` (hard links where possible)."""
    for entry in old.iterdir():
        if (new / entry.name).exists() or (new / entry.name).is_symlink():
            continue
        if entry.is_symlink():
            os.symlink(os.readlink(entry), new / entry.name)
        elif entry.is_dir():
            shutil.copytree(entry, new / entry.name, symlinks=True)
        else:
            try:
                os.link(entry, new / entry.name)
            except OSError:
                shutil.copy2(entry, new / entry.name)


def save_weights(
    out_dir: str | os.PathLike,
    weights: Mapping[str, mx.array],
    config: InceptionV3Config,
    dtype: str | mx.Dtype | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write ``weights`` and ``config`` to ``out_dir`` atomically and return the directory.

    A new directory is built complete under a temporary name beside ``out_dir`` and renamed
    into place in one step. An existing directory (its other files kept) is swapped for the new
    one in one step where the system can (Linux, macOS): a kill at any moment leaves the old
    copy or the new one, whole. Elsewhere its files are replaced one by one, ``config.json``
    last and never removed first. ``dtype``: see ``write_weights_files``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"cannot write {out_dir}: it is a file, not a folder")
    if out_dir.is_symlink():  # the folder it names is replaced, the link stays as it is
        out_dir = Path(os.path.realpath(out_dir))
    prefix = f".{out_dir.name}-"
    remove_stale_staging(out_dir.parent, prefix, marker=WEIGHTS_FILE)
    try:
        staging = make_staging_dir(out_dir.parent, prefix=prefix)
    except OSError as error:
        raise explain_write_error(out_dir, error, CheckpointError) from None
    try:
        names = write_weights_files(staging, weights, config, dtype, extra_files)
        if not out_dir.exists():
            os.replace(staging, out_dir)
            return out_dir
        _keep_other_files(out_dir, staging)
        if not exchange_paths(staging, out_dir):  # staging holds the old copy after a swap
            for name in names:  # config.json last: the marker load looks for
                os.replace(staging / name, out_dir / name)
        _fsync_dir(out_dir.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable on POSIX; folders cannot be opened this way everywhere.
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def save_model(
    model: InceptionV3, out_dir: str | os.PathLike, dtype: str | mx.Dtype | None = None
) -> Path:
    """Write a model (its weights and ``model.config``) as a weights directory."""
    if any(key.endswith("conv.bias") for key in model_weights(model)):
        raise CheckpointError("cannot save a model whose BatchNorm was folded: save the original")
    return save_weights(out_dir, model_weights(model), model.config, dtype=dtype)


def read_config(directory: str | os.PathLike) -> InceptionV3Config:
    """Return the config saved in a weights directory."""
    path = Path(directory) / CONFIG_FILE
    try:
        data = read_json(path, CheckpointError, f"{path} is not a valid config")
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: not a converted weights directory") from None
    return config_from_data(data, str(path))


def config_from_data(data: object, where: str) -> InceptionV3Config:
    """Return the config parsed JSON ``data`` describes, or raise one CheckpointError line
    naming ``where`` and the first field that is wrong (type, range or size)."""
    try:
        return InceptionV3Config.from_dict(data)
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{where} is not a valid config: {error}") from None


def load_weights(directory: str | os.PathLike) -> tuple[dict[str, mx.array], InceptionV3Config]:
    """Return the weights and config of a weights directory."""
    directory = Path(directory)
    config = read_config(directory)
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the weights directory is incomplete")
    try:
        weights = mx.load(str(path))
    except Exception as error:  # MLX raises RuntimeError/ValueError for malformed files
        raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from None
    return weights, config
