"""The weights directory: ``model.safetensors`` (MLX layout) beside ``config.json``.

Writes are atomic: a new directory appears in one rename, fully written and fsynced; an existing
one gets ``config.json`` (the marker ``load`` looks for) removed first and written last, so it never
pairs new weights with an old config.
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

from ..atomic import explain_write_error, make_staging_dir
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
    except (OSError, struct.error, ValueError):
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


def _write_directory_files(
    directory: Path, arrays: dict[str, mx.array], texts: dict[str, str]
) -> None:
    write_safetensors(directory / WEIGHTS_FILE, arrays, metadata={"format": FORMAT})
    for name, text in texts.items():
        with open(directory / name, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def save_weights(
    out_dir: str | os.PathLike,
    weights: Mapping[str, mx.array],
    config: InceptionV3Config,
    dtype: str | mx.Dtype | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write ``weights`` and ``config`` to ``out_dir`` atomically and return the directory.

    A new directory is built under a temporary name beside ``out_dir`` and renamed into place in
    one step. An existing directory keeps its other files; there the old ``config.json`` is
    removed first and the new one written last, so a crash half-way leaves a directory that
    ``load`` refuses as incomplete, never new weights with an old config. With a half-precision
    ``dtype`` the BatchNorm statistics stay float32: in half precision ``running_var + eps``
    loses the small variances that matter most.
    """
    out_dir = Path(out_dir)
    target = parse_dtype(dtype)
    arrays = {}
    for key, value in weights.items():
        keep_float32 = key.endswith(("running_mean", "running_var"))
        if target is not None and mx.issubdtype(value.dtype, mx.floating) and not keep_float32:
            value = value.astype(target)
        arrays[key] = value
    mx.eval(arrays)
    texts = {**(extra_files or {}), CONFIG_FILE: json.dumps(config.to_dict(), indent=2) + "\n"}
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"cannot write {out_dir}: it is a file, not a folder")
    try:
        staging = make_staging_dir(out_dir.parent, prefix=f".{out_dir.name}-")
    except OSError as error:
        raise explain_write_error(out_dir, error, CheckpointError) from None
    try:
        _write_directory_files(staging, arrays, texts)
        if not out_dir.exists():
            os.replace(staging, out_dir)
            return out_dir
        (out_dir / CONFIG_FILE).unlink(missing_ok=True)
        for name in [WEIGHTS_FILE, *texts]:  # config.json comes last in texts
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


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
