"""Inference-only rewrites of a trained network that keep its outputs: BatchNorm folding."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .layers import BasicConv2d


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return ``model`` with every BasicConv2d's BatchNorm folded into its convolution.

    conv(x) * s + (beta - mean * s), with s = gamma / sqrt(var + eps), computed in float32 so that
    a later cast to half precision does not cast the BatchNorm statistics. Only valid for
    inference: the folded network has no running statistics to update. Works in place.
    """
    for _, module in model.named_modules():
        if isinstance(module, BasicConv2d) and "bn" in module:
            bn = module.bn
            scale = bn.weight.astype(mx.float32) * mx.rsqrt(
                bn.running_var.astype(mx.float32) + bn.eps
            )
            weight = module.conv.weight.astype(mx.float32) * scale[:, None, None, None]
            bias = bn.bias.astype(mx.float32) - bn.running_mean.astype(mx.float32) * scale
            conv = module.conv
            conv.weight = weight
            conv.bias = bias
            del module["bn"]
    model.eval()
    return model
