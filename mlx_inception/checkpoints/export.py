"""MLX weights -> a torchvision state dict: ``.safetensors`` (no PyTorch needed) or ``.pth``.

The inverse of ``convert``: the names are already torchvision's, convolution weights go back
from OHWI to OIHW, and every BatchNorm gets the ``num_batches_tracked`` counter torchvision's
state dict holds, so that ``inception_v3(...).load_state_dict(state, strict=True)`` accepts it.
Only the network torchvision can build is exported: the paper's other variants compute
something torchvision's ``inception_v3`` cannot, with the same or other parameters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..atomic import check_destination, write_atomically
from ..errors import CheckpointError
from ..model import InceptionV3Config
from . import store
from .convert import check_weights

SUFFIXES = (".safetensors", ".pth", ".pt")


def torchvision_incompatibility(config: InceptionV3Config) -> str | None:
    """Return why torchvision's ``inception_v3`` cannot compute what ``config`` describes, or
    None when it can."""
    different = [
        f"{name}={value!r}" for name, value, theirs in (
            ("stem", config.stem, "299"),
            ("bn_aux", config.bn_aux, False),
            ("pool_count_include_pad", config.pool_count_include_pad, True),
            ("mixed_7c_pool", config.mixed_7c_pool, "avg"),
        ) if value != theirs
    ]
    if not different:
        return None
    return (f"these weights are a variant torchvision's inception_v3 cannot build "
            f"({', '.join(different)}); only torchvision's own network can be exported")


def torchvision_state_dict(
    weights: Mapping[str, mx.array], config: InceptionV3Config
) -> dict[str, mx.array]:
    """Return ``weights`` (MLX layout) as torchvision's ``inception_v3`` state dict."""
    problem = torchvision_incompatibility(config)
    if problem:
        raise CheckpointError(problem)
    check_weights(weights, config)
    state = {}
    for key, value in weights.items():
        if key.endswith("conv.weight") and value.ndim == 4:
            value = value.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        state[key] = value
        if key.endswith(".running_var"):
            # How many batches PyTorch's BatchNorm has seen; read only when momentum is None.
            state[key.removesuffix("running_var") + "num_batches_tracked"] = mx.array(0, mx.int64)
    return state


def torchvision_call(config: InceptionV3Config) -> str:
    """Return the torchvision call that builds the network a state dict of ``config`` fits."""
    return (f"torchvision.models.inception_v3(weights=None, num_classes={config.num_classes}, "
            f"aux_logits={config.aux_logits}, transform_input={config.transform_input}, "
            "init_weights=False)")


def _to_torch(value: mx.array):
    import torch

    if value.dtype == mx.bfloat16:  # NumPy has no bfloat16: through float32, exactly
        return torch.from_numpy(np.array(value.astype(mx.float32))).to(torch.bfloat16)
    return torch.from_numpy(np.array(value))


def export_weights(
    source: str | os.PathLike, out: str | os.PathLike, dtype: str | None = None
) -> tuple[Path, list[str]]:
    """Write the weights directory ``source`` as a torchvision state dict to ``out``; return
    ``out`` and notes on how to use it.

    ``.safetensors`` is written by MLX, ``.pth``/``.pt`` by ``torch.save`` (PyTorch needed).
    ``dtype`` casts the weights (BatchNorm statistics stay float32). The file appears complete
    or not at all; an existing file is replaced only by a complete one.
    """
    out = Path(os.path.expanduser(os.fspath(out)))
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES:
        raise CheckpointError(f"{out}: choose a .safetensors or .pth file name to export to")
    if out.is_dir():
        raise CheckpointError(f"cannot write {out}: it is a folder; name a file")
    torch = None
    if suffix != ".safetensors":
        try:
            import torch
        except ImportError:
            raise CheckpointError(
                f"writing {out.name} needs PyTorch: pip install torch, or export to "
                f"{out.with_suffix('.safetensors').name}, which needs no PyTorch"
            ) from None
    check_destination(out, CheckpointError)
    if not store.is_weights_dir(source):
        raise CheckpointError(
            f"{source} is not MLX weights: pass a run directory, its best or last, or a folder "
            f"with {store.WEIGHTS_FILE} and {store.CONFIG_FILE}"
        )
    weights, config = store.load_weights(source)
    target = store.parse_dtype(dtype)
    if target is not None:
        weights = {k: v if k.endswith(("running_mean", "running_var")) else v.astype(target)
                   for k, v in weights.items()}
    state = torchvision_state_dict(weights, config)
    mx.eval(state)
    if torch is None:
        def write(temporary: Path) -> None:
            mx.save_safetensors(str(temporary), state, metadata={"format": "pt"})
    else:
        tensors = {key: _to_torch(value) for key, value in state.items()}

        def write(temporary: Path) -> None:
            torch.save(tensors, temporary)
    try:
        write_atomically(out, write)
    except (OSError, RuntimeError) as error:  # disk full, a folder that vanished
        raise CheckpointError(f"cannot write {out}: {error}") from None
    preprocessing = config.preprocessing
    notes = [
        f"load it with {torchvision_call(config)} and load_state_dict(..., strict=True)",
        f"its images: resize {preprocessing.resize_size}, centre crop {preprocessing.crop_size}, "
        f"mean {list(preprocessing.mean)}, std {list(preprocessing.std)}",
    ]
    if config.labels and config.labels != "imagenet-1k":
        notes.append(f"class order: {', '.join(map(str, config.labels))}")
    return out, notes


__all__ = ["export_weights", "torchvision_call", "torchvision_incompatibility",
           "torchvision_state_dict"]
