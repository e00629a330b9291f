"""Inception-v3 in MLX, numerically identical to torchvision's reference."""

from . import _blas

# Must run before mlx.core is first imported anywhere: see _blas.
_blas.preload()

from .loading import load  # noqa: E402
from .model import InceptionV3, InceptionV3Config, Preprocessing, tap_names  # noqa: E402

__version__ = "0.1.0"

__all__ = ["InceptionV3", "InceptionV3Config", "Preprocessing", "load", "tap_names", "train",
           "__version__"]


def __getattr__(name: str):
    # ``train`` on first use: the trainer's modules are not needed to load or run a model.
    if name == "train":
        from .training.api import train

        return train
    raise AttributeError(f"module 'mlx_inception' has no attribute {name!r}")
