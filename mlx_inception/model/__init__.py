"""Inception-v3 in pure MLX: layers, the paper's blocks, the assembled network."""

from .blocks import (
    InceptionA,
    InceptionAux,
    InceptionB,
    InceptionBlock,
    InceptionC,
    InceptionD,
    InceptionE,
)
from .inception_v3 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InceptionV3,
    InceptionV3Config,
    Preprocessing,
    Taps,
    minimum_input_size,
    tap_names,
)
from .layers import AvgPool2d, AvgPool3x3, BasicConv2d, BatchNorm, MaxPool2d

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "AvgPool2d",
    "AvgPool3x3",
    "BasicConv2d",
    "BatchNorm",
    "InceptionA",
    "InceptionAux",
    "InceptionB",
    "InceptionBlock",
    "InceptionC",
    "InceptionD",
    "InceptionE",
    "InceptionV3",
    "InceptionV3Config",
    "MaxPool2d",
    "Preprocessing",
    "Taps",
    "minimum_input_size",
    "tap_names",
]
