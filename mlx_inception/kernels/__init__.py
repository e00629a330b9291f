"""Faster CPU implementations of the model's operations, installed on a model from outside.

MLX's CPU backend unfolds every convolution's input (im2col) and differentiates strided
convolutions and pools through plain loops. :func:`install` swaps, module by module, the
classes of a model's layers for subclasses that compute the same function another way:

- stride-1 convolutions as shifted matrix products, forward and backward (:mod:`.conv`);
- strided convolutions and pools with a fast input gradient (:mod:`.strided`);
- training-mode BatchNorm + ReLU with a hand-written gradient (:mod:`.batchnorm`).

The subclasses add no parameters, so names, shapes and saved weights stay the model's. Off the
CPU each falls back to the model's own code, and ``MLX_INCEPTION_CPU_KERNELS=0`` makes
:func:`install` do nothing: then the paper's forward in ``mlx_inception.model`` is what runs.
"""

from __future__ import annotations

import os

import mlx.nn as nn

from ..model import layers
from ..model.layers import pair
from .batchnorm import BasicConv2d
from .conv import ShiftedConv2d
from .strided import AvgPool2d, MaxPool2d, StridedConv2d

ENVIRONMENT_VARIABLE = "MLX_INCEPTION_CPU_KERNELS"


def enabled() -> bool:
    """Return whether :func:`install` installs the kernels (``MLX_INCEPTION_CPU_KERNELS``)."""
    value = os.environ.get(ENVIRONMENT_VARIABLE, "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def install(model: nn.Module) -> nn.Module:
    """Return ``model`` with its layers computed by this package's CPU kernels (in place)."""
    if not enabled():
        return model
    for _, module in model.named_modules():
        if type(module) is layers.BasicConv2d:
            module.__class__ = BasicConv2d
        elif type(module) is nn.Conv2d:  # a BasicConv2d's, folded or not
            module.__class__ = ShiftedConv2d if pair(module.stride) == (1, 1) else StridedConv2d
        elif type(module) is layers.MaxPool2d:
            module.__class__ = MaxPool2d
        elif type(module) is layers.AvgPool2d:
            module.__class__ = AvgPool2d
    return model


__all__ = ["ENVIRONMENT_VARIABLE", "enabled", "install"]
