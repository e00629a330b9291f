"""PyTorch (torchvision or timm) Inception-v3 checkpoints -> MLX weights.

The parameter names are the same on both sides; conversion is a change of layout: convolution
weights go from OIHW to OHWI. Which tensors are convolution weights is decided by their role
(``*.conv.weight``), never by their shape (``Conv2d_1a_3x3`` is 32x3x3x3 in both layouts).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from ..atomic import check_destination
from ..errors import CheckpointError
from ..model import InceptionV3, InceptionV3Config
from . import store

PICKLE_SUFFIXES = (".pth", ".pt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)
# Google's checkpoint as torchvision distributes it expects transform_input=True.
TORCHVISION_PRETRAINED_PREFIX = "inception_v3_google"


@dataclass
class Conversion:
    """The result of converting a state_dict: MLX weights, the config they need, and notes."""

    weights: dict[str, mx.array]
    config: InceptionV3Config
    notes: list[str] = field(default_factory=list)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# What a weight may be stored as: floating point of 16 to 64 bits. BatchNorm's step counter
# (num_batches_tracked, dropped on conversion) is the one integer a checkpoint may hold.
WEIGHT_DTYPES = ("float16", "bfloat16", "float32", "float64")
COUNTER_SUFFIX = "num_batches_tracked"


def _dtype_name(dtype: object) -> str:
    return str(dtype).removeprefix("torch.").removeprefix("mlx.core.")


def check_tensor_kind(key: object, dtype: object, path: object) -> None:
    """Raise CheckpointError (one line, naming ``key`` and ``dtype``) unless ``key`` is a string
    and ``dtype`` a float of 16 to 64 bits (an integer for ``num_batches_tracked`` only)."""
    if not isinstance(key, str):
        raise CheckpointError(f"{path}: key {key!r:.80} is not a string (a {type(key).__name__}): "
                              "not a state_dict")
    name = _dtype_name(dtype)
    if name in WEIGHT_DTYPES:
        return
    if key.endswith(COUNTER_SUFFIX) and name in ("int64", "int32", "uint8", "int8", "int16"):
        return
    raise CheckpointError(
        f"{path}: {key:.200} has dtype {name}; weights must be float16, bfloat16, float32 or "
        "float64 (quantized, complex, boolean and integer weights are not Inception-v3's)"
    )


def _from_torch(key: str, tensor, path: Path) -> mx.array:
    """Return a plain CPU tensor as an MLX array (float64 as float32); refuse anything else."""
    import torch

    check_tensor_kind(key, tensor.dtype, path)
    if tensor.is_quantized or tensor.layout != torch.strided or tensor.is_meta:
        kind = ("quantized" if tensor.is_quantized else "meta" if tensor.is_meta
                else str(tensor.layout).removeprefix("torch."))
        raise CheckpointError(f"{path}: {key:.200} is a {kind} tensor, not a plain one with its "
                              "values: not a weights checkpoint")
    if tensor.dtype == torch.bfloat16:
        return mx.array(tensor.float().numpy()).astype(mx.bfloat16)
    if tensor.dtype == torch.float64:
        tensor = tensor.float()
    return mx.array(tensor.detach().cpu().numpy())


def _unwrap(state: Mapping, path: Path) -> Mapping:
    for key in ("state_dict", "model_state_dict", "model", "state_dict_ema"):
        if isinstance(state.get(key), Mapping):
            return state[key]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return state


def read_state_dict(path: str | os.PathLike) -> dict[str, mx.array]:
    """Return the tensors of a ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file as MLX arrays.

    Pickle files are read with ``torch.load(weights_only=True)``, which refuses to run code;
    safetensors files are read by MLX without PyTorch.
    """
    path = Path(path)
    if path.is_dir():
        if store.is_weights_dir(path):
            raise CheckpointError(
                f"{path} is already a converted weights folder: use it as it is (--weights "
                f"{path}), there is nothing to convert"
            )
        raise CheckpointError(
            f"{path} is a folder, not a checkpoint file: pass a .pth, .pt, .bin or "
            ".safetensors file"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): download or save the checkpoint again")
    suffix = path.suffix.lower()
    if store.is_weights_file(path):
        raise CheckpointError(
            f"{path} is already converted (mlx-inception's format): use its folder "
            f"(--weights {path.parent}), there is nothing to convert"
        )
    if suffix in SAFETENSORS_SUFFIXES:
        try:
            state = mx.load(str(path))
        except Exception as error:
            raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from None
        for key, value in state.items():
            check_tensor_kind(key, value.dtype, path)
    elif suffix in PICKLE_SUFFIXES:
        try:
            import torch
        except ImportError:
            raise CheckpointError(
                f"reading {path.name} needs PyTorch: pip install 'mlx-inception[torch]', "
                "or use a .safetensors file"
            ) from None
        if not _looks_like_torch_file(path):
            raise CheckpointError(
                f"{path} is not a PyTorch checkpoint: neither the zip archive torch.save "
                "writes nor a pickle (a web page or text saved under that name?)"
            )
        try:
            with warnings.catch_warnings():  # torch's notes on deprecated storage types
                warnings.simplefilter("ignore", UserWarning)
                raw = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as error:
            raise CheckpointError(
                f"{path} is not a readable PyTorch checkpoint ({_describe_error(error)})"
            ) from None
        if not isinstance(raw, Mapping):
            raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a state_dict")
        raw = _unwrap(raw, path)
        state = {}
        for key, value in raw.items():
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{path}: entry {key!r:.80} is not a tensor")
            state[key] = _from_torch(key, value, path)
    else:
        raise CheckpointError(
            f"{path}: unsupported checkpoint type {suffix or '(none)'}; "
            "expected .pth, .pt, .bin or .safetensors"
        )
    return {key.removeprefix("module."): value for key, value in state.items()}


def _looks_like_torch_file(path: Path) -> bool:
    """Return True if ``path`` starts like a file torch.save writes: a zip archive (the format
    since PyTorch 1.6) or a pickle of protocol 2 or later (the legacy format)."""
    with open(path, "rb") as handle:
        start = handle.read(4)
    return start.startswith(b"PK\x03\x04") or start[:1] == b"\x80"


def _describe_error(error: Exception) -> str:
    """Return an exception as one line that says something: a bare ``KeyError(105)`` from
    deep inside the unpickler becomes ``KeyError: 105``."""
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else ""
    if len(message) < 12:  # a bare key, number or word means nothing without its type
        return f"{type(error).__name__}: {message}" if message else type(error).__name__
    return message


def _summarise(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_weights(weights: Mapping[str, mx.array], config: InceptionV3Config) -> None:
    """Raise CheckpointError listing missing, unexpected and mis-shaped keys, if any."""
    expected = {
        key: value.shape
        for key, value in tree_flatten(InceptionV3(config, init_weights=False).parameters())
    }
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    misshaped = [
        f"{key} {tuple(weights[key].shape)} != {tuple(shape)}"
        for key, shape in expected.items()
        if key in weights and tuple(weights[key].shape) != tuple(shape)
    ]
    for key in sorted(set(expected) & set(weights)):
        check_tensor_kind(key, weights[key].dtype, "checkpoint")
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} ({_summarise(missing)})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} ({_summarise(unexpected)})")
    if misshaped:
        problems.append(f"mis-shaped {len(misshaped)} ({_summarise(misshaped, 3)})")
    if problems:
        raise CheckpointError(
            "checkpoint does not match Inception-v3 (num_classes="
            f"{config.num_classes}, aux_logits={config.aux_logits}): " + "; ".join(problems)
        )


def convert_state_dict(
    state: Mapping[str, mx.array], config: InceptionV3Config | None = None
) -> Conversion:
    """Return MLX weights for a torchvision/timm state_dict and the config that fits them.

    ``num_classes`` and ``aux_logits`` are read from the checkpoint; other fields come from
    ``config``. A 1001-class head (TensorFlow's background class first) loses its first row.
    """
    notes: list[str] = []
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if "fc.weight" not in state:
        raise CheckpointError(
            "checkpoint has no fc.weight: not an Inception-v3 state_dict "
            f"(first keys: {_summarise(sorted(state), 3)})"
        )
    num_classes = int(state["fc.weight"].shape[0])
    if num_classes == 1001:
        for key in ("fc.weight", "fc.bias", "AuxLogits.fc.weight", "AuxLogits.fc.bias"):
            if key in state:
                state[key] = state[key][1:]
        num_classes = 1000
        notes.append("dropped class 0 (TensorFlow's background class) of a 1001-class head")
    aux_logits = any(key.startswith("AuxLogits.") for key in state)
    if not aux_logits:
        notes.append("checkpoint has no AuxLogits: the model is built without the aux head")
    base = (config or InceptionV3Config()).to_dict()
    labels = base["labels"]
    if (labels == "imagenet-1k" and num_classes != 1000) or (
        isinstance(labels, list) and len(labels) != num_classes
    ):
        if isinstance(labels, list):
            notes.append(f"dropped the {len(labels)} labels given for {num_classes} classes")
        labels = None
    try:
        config = InceptionV3Config.from_dict(
            {**base, "num_classes": num_classes, "aux_logits": aux_logits, "labels": labels}
        )
    except ValueError as error:  # a head of 0 or a million classes
        raise CheckpointError(f"checkpoint's fc.weight does not fit a config: {error}") from None
    weights = {}
    for key, value in state.items():
        if key.endswith("conv.weight") and value.ndim == 4:
            value = value.transpose(0, 2, 3, 1)  # OIHW -> OHWI
        weights[key] = value
    check_weights(weights, config)
    return Conversion(weights=weights, config=config, notes=notes)


def default_config_for(path: Path) -> InceptionV3Config:
    """Return the config a raw checkpoint file most likely needs, judged by its name."""
    if path.name.startswith(TORCHVISION_PRETRAINED_PREFIX):
        return InceptionV3Config(transform_input=True)
    return InceptionV3Config()


def convert_file(
    path: str | os.PathLike, config: InceptionV3Config | None = None
) -> Conversion:
    """Read and convert a checkpoint file; the config records its name and SHA-256."""
    path = Path(path)
    state = read_state_dict(path)
    conversion = convert_state_dict(state, config or default_config_for(path))
    conversion.config.source = {
        **conversion.config.source,
        "file": path.name,
        "sha256": sha256_file(path),
    }
    return conversion


def convert_checkpoint(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    dtype: str = "float32",
    config: InceptionV3Config | None = None,
) -> tuple[Path, list[str]]:
    """Convert a PyTorch checkpoint into a weights directory; return it and the notes.

    Nothing is written unless the whole conversion succeeds; a destination that cannot be
    written is refused before the checkpoint is read.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"cannot write {out_dir}: it is a file, not a folder")
    check_destination(out_dir, CheckpointError)
    conversion = convert_file(src, config)
    out = store.save_weights(out_dir, conversion.weights, conversion.config, dtype=dtype)
    return out, conversion.notes


__all__ = [
    "Conversion",
    "check_weights",
    "convert_checkpoint",
    "convert_file",
    "convert_state_dict",
    "read_state_dict",
    "sha256_file",
]
