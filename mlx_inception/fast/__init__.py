"""The inference rewrite of a trained model: BatchNorm folded, parallel 1x1 convolutions fused,
compiled on a GPU. The rewritten blocks run their own ``branches``; see :mod:`.fuse`."""

from .fuse import fold_batchnorm, fuse_parallel_convolutions
from .network import (
    FastInceptionV3,
    fast_model,
    is_fast,
    module_tree_copy,
    optimize_for_inference,
)

__all__ = [
    "FastInceptionV3",
    "fast_model",
    "fold_batchnorm",
    "fuse_parallel_convolutions",
    "is_fast",
    "module_tree_copy",
    "optimize_for_inference",
]
