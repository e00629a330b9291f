"""Inference-only rewrites of a trained network that keep its outputs.

- :func:`fold_batchnorm`: every BatchNorm folded into the layer before it, a convolution or
  (the BN-auxiliary head's ``fc_bn``) the aux classifier's ``fc`` (a bias appears).
- :func:`fuse_parallel_convolutions`: in each Inception block, the 1x1 convolutions that read the
  block's input become one matrix product with their output channels side by side; the pool
  branch's 1x1 convolution joins them by computing it *before* its 3x3 average pool (both are
  linear, so they commute; the bias is added after the pool, which keeps the border exact); every
  other 1x1 convolution becomes a plain matrix product, which reads the activation in place where
  a convolution would copy it first.

The blocks keep their own ``branches``: only their layers are swapped, so taps, ``replace`` and
the figure's data flow are the model's. The fused parameters are no longer torchvision's (the 1x1
weights are concatenated): save weights from the model before rewriting it.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..model import (
    AvgPool3x3,
    BasicConv2d,
    InceptionA,
    InceptionAux,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
    InceptionV3,
)
from ..model.layers import pair

# The 1x1 convolutions of each block that read the block's input, besides the pool branch's.
INPUT_CONVOLUTIONS = {
    InceptionA: ("branch1x1", "branch5x5_1", "branch3x3dbl_1"),
    InceptionB: ("branch3x3dbl_1",),
    InceptionC: ("branch1x1", "branch7x7_1", "branch7x7dbl_1"),
    InceptionD: ("branch3x3_1", "branch7x7x3_1"),
    InceptionE: ("branch1x1", "branch3x3_1", "branch3x3dbl_1"),
}


class FoldedBasicConv2d(BasicConv2d):
    """A BasicConv2d whose BatchNorm is folded into its convolution: ReLU(conv(x) + bias)."""

    def __call__(self, x: mx.array) -> mx.array:
        return nn.relu(self.conv(x))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return ``model`` with every BatchNorm folded into the layer before it (in place).

    Each BasicConv2d's BatchNorm goes into its convolution: conv(x) * s + (beta - mean * s), with
    s = gamma / sqrt(var + eps). The BN-auxiliary head's ``fc_bn`` goes into its ``fc`` the same
    way. Computed in float32 so that a later cast to half precision does not cast the BatchNorm
    statistics. Only valid for inference: the folded network has no statistics to update.
    """
    for _, module in model.named_modules():
        if isinstance(module, BasicConv2d) and "bn" in module:
            _fold_into(module.conv, module.bn)
            del module["bn"]
            module.__class__ = FoldedBasicConv2d
        elif isinstance(module, InceptionAux) and "fc_bn" in module:
            _fold_into(module.fc, module.fc_bn)
            del module["fc_bn"]
    model.eval()
    return model


def _fold_into(layer: nn.Module, bn: nn.BatchNorm) -> None:
    """Give ``layer`` (a convolution or linear layer, output channels first in its weight) the
    weight and bias of ``bn(layer(x))`` in eval mode, in float32."""
    scale = bn.weight.astype(mx.float32) * mx.rsqrt(bn.running_var.astype(mx.float32) + bn.eps)
    weight = layer.weight.astype(mx.float32)
    bias = layer.bias.astype(mx.float32) if "bias" in layer else mx.zeros_like(scale)
    layer.weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    layer.bias = bn.bias.astype(mx.float32) + (bias - bn.running_mean.astype(mx.float32)) * scale
    # Layer by layer, so the unfolded weights are freed as we go.
    mx.eval(layer.weight, layer.bias)


def _folded(module: BasicConv2d) -> tuple[mx.array, mx.array]:
    """Return the weight (out, 1, 1, in) and the bias of a folded 1x1 BasicConv2d."""
    if "bn" in module:
        raise ValueError("fold the BatchNorms first (fold_batchnorm): fusion needs conv biases")
    return module.conv.weight, module.conv.bias


def _matmul_transposed(x: mx.array, weight: mx.array) -> mx.array:
    """Return ``x @ weight.T`` over the last axis; in float32 for half precision on the CPU."""
    flat = x.reshape(-1, x.shape[-1])
    if x.dtype != mx.float32 and mx.default_device().type == mx.DeviceType.cpu:
        # MLX's CPU backend has no fast half-precision matmul.
        product = (flat.astype(mx.float32) @ weight.astype(mx.float32).T).astype(x.dtype)
    else:
        product = flat @ weight.T
    return product.reshape(*x.shape[:-1], weight.shape[0])


class PointwiseConv2d(nn.Module):
    """A 1x1, stride-1 convolution (with bias) of an NHWC input as one matrix product.

    Stands in for ``nn.Conv2d`` inside a BasicConv2d, so names stay ``<module>.conv.weight``.
    """

    def __init__(self, weight: mx.array, bias: mx.array):
        super().__init__()
        self.weight = weight  # (out, 1, 1, in), as nn.Conv2d keeps it
        self.bias = bias

    def __call__(self, x: mx.array) -> mx.array:
        return _matmul_transposed(x, self.weight.reshape(self.weight.shape[0], -1)) + self.bias


class FusedPointwise(nn.Module):
    """The 1x1 convolutions that read one block input, computed together by one matmul.

    Each convolution is replaced in its block by a :class:`PointwiseBranch`; the first of them
    to see an input computes the product for all, the last one to take its part lets it go.
    """

    def __init__(self, convolutions: list[BasicConv2d]):
        super().__init__()
        weights, biases = zip(*(_folded(c) for c in convolutions), strict=True)
        self.weight = mx.concatenate([w.reshape(w.shape[0], -1) for w in weights])
        self.bias = mx.concatenate(biases)
        mx.eval(self.weight, self.bias)  # the separate weights are freed block by block
        edges = [0]
        for w in weights:
            edges.append(edges[-1] + int(w.shape[0]))
        # Plain Python state, kept out of the parameter tree.
        object.__setattr__(self, "_edges", edges)

    def part(self, x: mx.array, index: int) -> tuple[mx.array, mx.array]:
        """Return convolution ``index``'s product with ``x`` (no bias) and its bias."""
        # The product is shared by the block's branches for one input and these weights; it is
        # computed again for another input, other weights or a part taken twice, and let go
        # once every part has been taken.
        pending = self.__dict__.get("_pending")
        key = (x, self.weight, self.bias)
        if pending is None or any(a is not b for a, b in zip(pending[0], key, strict=True)) or (
            index in pending[2]
        ):
            pending = (key, _matmul_transposed(x, self.weight), set())
        pending[2].add(index)
        done = len(pending[2]) == len(self._edges) - 1
        object.__setattr__(self, "_pending", None if done else pending)
        start, stop = self._edges[index], self._edges[index + 1]
        return pending[1][..., start:stop], self.bias[start:stop]


class PointwiseBranch(nn.Module):
    """Stands in for a folded 1x1 BasicConv2d: its part of a :class:`FusedPointwise`, then
    (for the pool branch) the 3x3 average pool, then bias and ReLU."""

    def __init__(self, fused: FusedPointwise, index: int, pool: AvgPool3x3 | None = None):
        super().__init__()
        object.__setattr__(self, "_fused", fused)  # a child of the block, not of this branch
        self.index = index
        if pool is not None:
            self.pool = pool

    def __call__(self, x: mx.array) -> mx.array:
        product, bias = self._fused.part(x, self.index)
        if "pool" in self:
            product = self.pool(product)
        return nn.relu(product + bias)


def _fuse_block(block: nn.Module) -> None:
    names = list(INPUT_CONVOLUTIONS[type(block)])
    # The pool branch joins when its pool is an average pool, which commutes with the 1x1.
    pooled = isinstance(block.pool, AvgPool3x3)
    if pooled:
        names.append("branch_pool")
    if len(names) < 2:
        return
    fused = FusedPointwise([block[name] for name in names])
    block.pointwise = fused
    for index, name in enumerate(names):
        pool = block.pool if pooled and name == "branch_pool" else None
        block[name] = PointwiseBranch(fused, index, pool)
    if pooled:
        block.pool = nn.Identity()  # the pool now runs inside the pool branch


def _is_pointwise(conv: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and conv.weight.shape[1:3] == (1, 1)
        and pair(conv.stride) == (1, 1)
        and pair(conv.padding) == (0, 0)
        and pair(conv.dilation) == (1, 1)
        and conv.groups == 1
    )


def fuse_parallel_convolutions(model: InceptionV3) -> InceptionV3:
    """Return ``model`` with each Inception block's parallel 1x1 convolutions fused into one.

    Needs folded BatchNorms (:func:`fold_batchnorm`). Every other 1x1 convolution (the stem's
    ``Conv2d_3b_1x1``, ``Mixed_6a.branch3x3dbl_1``, ``AuxLogits.conv0``) becomes a matmul.
    Works in place; already fused blocks are left as they are.
    """
    for block in model.children().values():
        if type(block) in INPUT_CONVOLUTIONS and "pointwise" not in block:
            _fuse_block(block)
    for _, module in model.named_modules():
        if isinstance(module, BasicConv2d) and _is_pointwise(module.conv):
            module.conv = PointwiseConv2d(*_folded(module))
    model.eval()
    return model
