"""Inception-v3 in pure MLX: layers, the paper's blocks, the assembled network."""

from .blocks import InceptionA, InceptionAux, InceptionB, InceptionC, InceptionD, InceptionE
from .inception_v3 import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InceptionV3,
    InceptionV3Config,
    Preprocessing,
    tap_names,
)
from .layers import BasicConv2d, BatchNorm

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BasicConv2d",
    "BatchNorm",
    "InceptionA",
    "InceptionAux",
    "InceptionB",
    "InceptionC",
    "InceptionD",
    "InceptionE",
    "InceptionV3",
    "InceptionV3Config",
    "Preprocessing",
    "tap_names",
]
