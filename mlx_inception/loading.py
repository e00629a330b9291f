"""One way in: ``load(source)`` gives a ready Inception-v3 from any kind of weights."""

from __future__ import annotations

import os
from pathlib import Path

import mlx.core as mx

from .checkpoints import convert, store
from .errors import CheckpointError
from .model import InceptionV3, InceptionV3Config
from .model.fuse import fold_batchnorm


def resolve(source: str | os.PathLike, **hub_options) -> Path:
    """Return the local path (weights directory or checkpoint file) that ``source`` names.

    ``source`` is a weights directory, a ``.pth``/``.pt``/``.bin``/``.safetensors`` file, a
    registry name or a Hugging Face Hub repo id (downloaded and converted once, then cached).
    """
    path = Path(os.path.expanduser(str(source)))
    if path.exists():
        return path
    from .checkpoints import hub  # imports huggingface_hub: only when it is needed

    return hub.resolve(str(source), **hub_options)


def build(
    weights: dict[str, mx.array], config: InceptionV3Config, dtype: str | mx.Dtype | None = None
) -> InceptionV3:
    """Return an eval-mode model holding ``weights`` (checked strictly), in ``dtype``.

    Half precision folds BatchNorm into the convolutions first, in float32, so no BatchNorm
    statistic is ever rounded to 16 bits.
    """
    convert.check_weights(weights, config)
    target = store.parse_dtype(dtype) or mx.float32
    model = InceptionV3(config, init_weights=False)
    model.load_weights([(k, v.astype(mx.float32)) for k, v in weights.items()], strict=True)
    model.eval()
    if target != mx.float32:
        fold_batchnorm(model)
        model.set_dtype(target)
    mx.eval(model.parameters())
    return model


def load(
    source: str | os.PathLike,
    dtype: str | mx.Dtype | None = None,
    config: InceptionV3Config | None = None,
    **hub_options,
) -> InceptionV3:
    """Return a ready Inception-v3 in eval mode, its config at ``model.config``.

    ``source``: a converted weights directory, a PyTorch checkpoint (``.pth``/``.pt``/``.bin``
    or ``.safetensors``, torchvision or timm; converted in memory), a registry name such as
    ``inception_v3.tv_in1k`` or a Hub repo id. ``dtype``: "float32" (default), "float16" or
    "bfloat16". ``config`` overrides the config guessed for a raw checkpoint.
    """
    path = resolve(source, **hub_options)
    if path.is_dir():
        if not store.is_weights_dir(path):
            raise CheckpointError(
                f"{path} is not a weights directory (needs {store.CONFIG_FILE} and "
                f"{store.WEIGHTS_FILE}); convert a checkpoint with `mlx-inception convert`"
            )
        weights, saved = store.load_weights(path)
        return build(weights, config or saved, dtype)
    conversion = convert.convert_file(path, config)
    return build(conversion.weights, conversion.config, dtype)
