"""Inference-only rewrites of a trained network that keep its outputs.

- :func:`fold_batchnorm`: every BatchNorm folded into the layer before it, a convolution or
  (the BN-auxiliary head's ``fc_bn``) the aux classifier's ``fc`` (a bias appears).
- :func:`fuse_parallel_convolutions`: in each Inception block, the 1x1 convolutions that read the
  block's input become one matrix product with their output channels side by side; the pool
  branch's 1x1 convolution joins them by computing it *before* its 3x3 average pool (both are
  linear, so they commute; the bias is added after the pool, which keeps the border exact); every
  other 1x1 convolution becomes a plain matrix product. MLX's CPU convolution copies its input
  twice (padding, then unfolding) before its matrix product even for a 1x1 kernel; a matmul
  reads the activation in place.
- :func:`optimize_for_inference`: both, and the plain call on the device's fastest path:
  ``mx.compile`` on a GPU, two CPU streams on the CPU (:mod:`mlx_inception.model.parallel`).

The rewritten blocks keep ``forward_with_taps``: the same branch keys, the same ``replace``.
Their parameters are no longer torchvision's (the fused 1x1 weights are concatenated), so save
weights from the model before optimising it.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .blocks import (
    InceptionA,
    InceptionAux,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
    Taps,
    _Block,
)
from .gradients import pair
from .inception_v3 import MIXED, InceptionV3
from .layers import BasicConv2d, avg_pool_3x3_same, max_pool
from .parallel import forward, sequential_forward


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return ``model`` with every BatchNorm folded into the layer before it.

    Each BasicConv2d's BatchNorm goes into its convolution: conv(x) * s + (beta - mean * s), with
    s = gamma / sqrt(var + eps). The BN-auxiliary head's ``fc_bn`` goes into its ``fc`` the same
    way: (W x + b) * s + (beta - mean * s). Computed in float32 so that a later cast to half
    precision does not cast the BatchNorm statistics. Only valid for inference: the folded
    network has no running statistics to update. Works in place.
    """
    for _, module in model.named_modules():
        if isinstance(module, BasicConv2d) and "bn" in module:
            _fold_into(module.conv, module.bn)
            del module["bn"]
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
    # Now, layer by layer: the unfolded weights and statistics are freed as we go instead of
    # all living beside the folded ones until the first evaluation.
    mx.eval(layer.weight, layer.bias)


def _is_pointwise(conv: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and conv.weight.shape[1:3] == (1, 1)
        and pair(conv.stride) == (1, 1)
        and pair(conv.padding) == (0, 0)
        and pair(conv.dilation) == (1, 1)
        and conv.groups == 1
    )


def _folded_weight_and_bias(module: BasicConv2d) -> tuple[mx.array, mx.array]:
    if "bn" in module:
        raise ValueError("fold the BatchNorms first (fold_batchnorm): fusion needs conv biases")
    conv = module.conv
    weight = conv.weight
    bias = conv.bias if "bias" in conv else mx.zeros((weight.shape[0],), dtype=weight.dtype)
    return weight, bias


def _matmul_transposed(x: mx.array, weight: mx.array) -> mx.array:
    """Return ``x @ weight.T``; in float32 for half-precision input on the CPU."""
    if x.dtype != mx.float32 and mx.default_device().type == mx.DeviceType.cpu:
        # MLX's CPU backend has no fast half-precision matmul (3x slower than float32 here);
        # its convolutions compute in float32 for the same reason.
        product = x.astype(mx.float32) @ weight.astype(mx.float32).T
        return product.astype(x.dtype)
    return x @ weight.T


class PointwiseConv2d(nn.Module):
    """Returns a 1x1, stride-1 convolution of an NHWC input computed as one matrix product.

    Stands in for ``nn.Conv2d`` inside a BasicConv2d, so names stay ``<module>.conv.weight``.
    """

    def __init__(self, weight: mx.array, bias: mx.array):
        super().__init__()
        self.weight = weight  # (out, 1, 1, in), as nn.Conv2d keeps it
        self.bias = bias

    def __call__(self, x: mx.array) -> mx.array:
        out_channels, in_channels = self.weight.shape[0], self.weight.shape[-1]
        flat = _matmul_transposed(
            x.reshape(-1, in_channels), self.weight.reshape(out_channels, in_channels)
        )
        return (flat + self.bias).reshape(*x.shape[:-1], out_channels)


class ParallelPointwise(nn.Module):
    """Returns the ReLU outputs of several 1x1 convolutions of one input, from one matmul.

    ``pooled_last``: the last convolution belongs to a pool branch (3x3 average pool, then that
    1x1 convolution). It is computed on the unpooled input and pooled afterwards, its bias added
    after the pool: exactly the same function, on fewer channels.
    """

    def __init__(
        self, convolutions: list[BasicConv2d], pooled_last: bool = False,
        pool_count_include_pad: bool = True,
    ):
        super().__init__()
        weights, biases = zip(*(_folded_weight_and_bias(c) for c in convolutions), strict=True)
        in_channels = weights[0].shape[-1]
        self.weight = mx.concatenate([w.reshape(w.shape[0], in_channels) for w in weights])
        self.bias = mx.concatenate(list(biases))
        mx.eval(self.weight, self.bias)  # the separate weights are freed block by block
        # Plain ints, kept out of the parameter tree.
        object.__setattr__(self, "_widths", tuple(int(w.shape[0]) for w in weights))
        self.pooled_last = pooled_last
        self.pool_count_include_pad = pool_count_include_pad

    def __call__(self, x: mx.array) -> list[mx.array]:
        products = _matmul_transposed(x.reshape(-1, x.shape[-1]), self.weight)
        products = products.reshape(*x.shape[:-1], -1)
        outputs, start = [], 0
        for index, width in enumerate(self._widths):
            part = products[..., start : start + width]
            bias = self.bias[start : start + width]
            start += width
            if self.pooled_last and index == len(self._widths) - 1:
                part = avg_pool_3x3_same(part, self.pool_count_include_pad)
            outputs.append(nn.relu(part + bias))
        return outputs


def _pointwise(conv: BasicConv2d) -> BasicConv2d:
    """The same BasicConv2d with its 1x1 convolution computed as a matmul."""
    weight, bias = _folded_weight_and_bias(conv)
    conv.conv = PointwiseConv2d(weight, bias)
    return conv


class FusedInceptionA(_Block):
    """InceptionA (Figure 5) with branch1x1, branch5x5_1, branch3x3dbl_1 and the pool branch's
    1x1 convolution computed by one matmul (``pointwise``)."""

    def __init__(self, block: InceptionA):
        super().__init__()
        pad = block.pool_count_include_pad
        self.pointwise = ParallelPointwise(
            [block.branch1x1, block.branch5x5_1, block.branch3x3dbl_1, block.branch_pool],
            pooled_last=True, pool_count_include_pad=pad,
        )
        self.branch5x5_2 = block.branch5x5_2
        self.branch3x3dbl_2 = block.branch3x3dbl_2
        self.branch3x3dbl_3 = block.branch3x3dbl_3
        self.pool_count_include_pad = pad

    def __call__(self, x: mx.array, taps: Taps | None = None, replace: Taps | None = None,
                 prefix: str = "") -> mx.array:
        b1, b5, b3, bp = self.pointwise(x)
        b1 = self._branch("branch1x1", b1, taps, replace, prefix)
        b5 = self._branch("branch5x5", self.branch5x5_2(b5), taps, replace, prefix)
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(b3))
        b3 = self._branch("branch3x3dbl", b3, taps, replace, prefix)
        bp = self._branch("branch_pool", bp, taps, replace, prefix)
        return mx.concatenate([b1, b5, b3, bp], axis=-1)


class FusedInceptionB(_Block):
    """InceptionB (Figure 10, 35 -> 17) with its one 1x1 convolution as a matmul."""

    def __init__(self, block: InceptionB):
        super().__init__()
        self.branch3x3 = block.branch3x3
        self.branch3x3dbl_1 = _pointwise(block.branch3x3dbl_1)
        self.branch3x3dbl_2 = block.branch3x3dbl_2
        self.branch3x3dbl_3 = block.branch3x3dbl_3

    __call__ = InceptionB.__call__


class FusedInceptionC(_Block):
    """InceptionC (Figure 6) with branch1x1, branch7x7_1, branch7x7dbl_1 and the pool branch's
    1x1 convolution computed by one matmul (``pointwise``)."""

    def __init__(self, block: InceptionC):
        super().__init__()
        pad = block.pool_count_include_pad
        self.pointwise = ParallelPointwise(
            [block.branch1x1, block.branch7x7_1, block.branch7x7dbl_1, block.branch_pool],
            pooled_last=True, pool_count_include_pad=pad,
        )
        for name in ("branch7x7_2", "branch7x7_3", "branch7x7dbl_2", "branch7x7dbl_3",
                     "branch7x7dbl_4", "branch7x7dbl_5"):
            setattr(self, name, getattr(block, name))
        self.pool_count_include_pad = pad

    def __call__(self, x: mx.array, taps: Taps | None = None, replace: Taps | None = None,
                 prefix: str = "") -> mx.array:
        b1, b7, bd, bp = self.pointwise(x)
        b1 = self._branch("branch1x1", b1, taps, replace, prefix)
        b7 = self._branch("branch7x7", self.branch7x7_3(self.branch7x7_2(b7)), taps, replace,
                          prefix)
        bd = self.branch7x7dbl_3(self.branch7x7dbl_2(bd))
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(bd))
        bd = self._branch("branch7x7dbl", bd, taps, replace, prefix)
        bp = self._branch("branch_pool", bp, taps, replace, prefix)
        return mx.concatenate([b1, b7, bd, bp], axis=-1)


class FusedInceptionD(_Block):
    """InceptionD (Figure 10, 17 -> 8) with branch3x3_1 and branch7x7x3_1 computed by one
    matmul (``pointwise``)."""

    def __init__(self, block: InceptionD):
        super().__init__()
        self.pointwise = ParallelPointwise([block.branch3x3_1, block.branch7x7x3_1])
        self.branch3x3_2 = block.branch3x3_2
        self.branch7x7x3_2 = block.branch7x7x3_2
        self.branch7x7x3_3 = block.branch7x7x3_3
        self.branch7x7x3_4 = block.branch7x7x3_4

    def __call__(self, x: mx.array, taps: Taps | None = None, replace: Taps | None = None,
                 prefix: str = "") -> mx.array:
        b3, b7 = self.pointwise(x)
        b3 = self._branch("branch3x3", self.branch3x3_2(b3), taps, replace, prefix)
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(b7)))
        b7 = self._branch("branch7x7x3", b7, taps, replace, prefix)
        bp = self._branch("branch_pool", max_pool(x, 3, 2), taps, replace, prefix)
        return mx.concatenate([b3, b7, bp], axis=-1)


class FusedInceptionE(_Block):
    """InceptionE (Figure 7) with branch1x1, branch3x3_1, branch3x3dbl_1 and (with the average
    pool) the pool branch's 1x1 convolution computed by one matmul (``pointwise``)."""

    def __init__(self, block: InceptionE):
        super().__init__()
        pad = block.pool_count_include_pad
        # A max pool does not commute with the convolution: that branch then stays apart.
        self.pool_fused = block.pool != "max"
        convolutions = [block.branch1x1, block.branch3x3_1, block.branch3x3dbl_1]
        if self.pool_fused:
            convolutions.append(block.branch_pool)
        else:
            self.branch_pool = _pointwise(block.branch_pool)
        self.pointwise = ParallelPointwise(
            convolutions, pooled_last=self.pool_fused, pool_count_include_pad=pad
        )
        for name in ("branch3x3_2a", "branch3x3_2b", "branch3x3dbl_2", "branch3x3dbl_3a",
                     "branch3x3dbl_3b"):
            setattr(self, name, getattr(block, name))
        self.pool_count_include_pad = pad
        self.pool = block.pool

    _pool = InceptionE._pool

    def __call__(self, x: mx.array, taps: Taps | None = None, replace: Taps | None = None,
                 prefix: str = "") -> mx.array:
        parts = self.pointwise(x)
        b1, b3, bd = parts[:3]
        bp = parts[3] if self.pool_fused else self.branch_pool(self._pool(x))
        b1 = self._branch("branch1x1", b1, taps, replace, prefix)
        b3 = mx.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
        b3 = self._branch("branch3x3", b3, taps, replace, prefix)
        bd = self.branch3x3dbl_2(bd)
        bd = mx.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
        bd = self._branch("branch3x3dbl", bd, taps, replace, prefix)
        bp = self._branch("branch_pool", bp, taps, replace, prefix)
        return mx.concatenate([b1, b3, bd, bp], axis=-1)


_FUSED = {
    InceptionA: FusedInceptionA,
    InceptionB: FusedInceptionB,
    InceptionC: FusedInceptionC,
    InceptionD: FusedInceptionD,
    InceptionE: FusedInceptionE,
}


def fuse_parallel_convolutions(model: InceptionV3) -> InceptionV3:
    """Return ``model`` with each Inception block's parallel 1x1 convolutions fused into one.

    Needs folded BatchNorms (:func:`fold_batchnorm`). Every other 1x1 convolution (the stem's
    ``Conv2d_3b_1x1``, ``Mixed_6a.branch3x3dbl_1``, ``AuxLogits.conv0``) becomes a matmul.
    Works in place; already fused blocks are left as they are.
    """
    for name, child in list(model.children().items()):
        fused = _FUSED.get(type(child))
        if fused is not None:
            setattr(model, name, fused(child))
    for _, module in model.named_modules():
        if isinstance(module, BasicConv2d) and _is_pointwise(module.conv):
            _pointwise(module)
    model.eval()
    return model


class FastInceptionV3(InceptionV3):
    """An InceptionV3 (folded and fused) whose plain call takes the device's fastest path.

    On a GPU: one ``mx.compile``-d graph, traced per input shape; the model's arrays are its
    declared inputs, so later changes to them (``set_dtype``, ``update``) are seen. On the CPU:
    no compilation (a compiled convolution + bias + ReLU measured 20-30% slower than the eager
    one on MLX 0.32's CPU backend), and a single image runs on two streams
    (:func:`mlx_inception.model.parallel.forward`). ``features`` (FID's pool3, ...) takes the
    same path; ``forward_with_taps`` runs eagerly and sequentially, as before.
    """

    def __call__(self, x: mx.array) -> mx.array | tuple[mx.array, mx.array]:
        if self.training:  # nothing to gain, and the parallel path knows eval mode only
            return InceptionV3.__call__(self, x)
        return self._fastest(x, "fc")

    def features(self, x: mx.array, layer: str = "avgpool") -> mx.array:
        """Return the activation of ``layer`` (see :meth:`InceptionV3.features`), on the same
        fastest path as the plain call."""
        if layer not in (*self._stem_names(), *MIXED, "avgpool"):
            return InceptionV3.features(self, x, layer)  # its error names the choices
        return self._fastest(x, layer)

    def compiled_forward(self, x: mx.array) -> mx.array | tuple[mx.array, mx.array]:
        """Return the plain call's output from the ``mx.compile``-d graph (any device)."""
        return self._compiled(x, "fc")

    def compiled_features(self, x: mx.array, layer: str = "avgpool") -> mx.array:
        """Return ``features(x, layer)`` from an ``mx.compile``-d graph, one per layer."""
        return self._compiled(x, layer)

    def _fastest(self, x: mx.array, stop_at: str) -> mx.array:
        """The eval output up to ``stop_at`` ("fc": the logits) on the device's fastest path."""
        device = mx.default_device().type
        if self.__dict__.get("_compile", True) and device == mx.DeviceType.gpu:
            return self._compiled(x, stop_at)
        if self.__dict__.get("_parallel", True) and device == mx.DeviceType.cpu:
            return forward(self, x, stop_at=stop_at)
        return sequential_forward(self, x, stop_at)

    def _compiled(self, x: mx.array, stop_at: str) -> mx.array:
        graphs = self.__dict__.setdefault("_compiled_graphs", {})  # one per stop_at
        if stop_at not in graphs:
            graphs[stop_at] = mx.compile(
                lambda images: sequential_forward(self, images, stop_at), inputs=self.state
            )
        return graphs[stop_at](x)


def optimize_for_inference(
    model: InceptionV3, compile: bool = True, parallel: bool = True
) -> FastInceptionV3:
    """Return ``model`` rewritten for fast inference: BatchNorm folded, 1x1s fused, and its
    plain call on the device's fastest path (see :class:`FastInceptionV3`).

    ``compile``: use ``mx.compile`` on a GPU. ``parallel``: use two streams on the CPU.
    Gives the same outputs as the plain model (to float32 rounding: see tests/test_fuse.py) and
    the same ``forward_with_taps`` keys. Works in place and leaves the model in eval mode; it
    can no longer be trained, and its parameter names are no longer torchvision's.
    """
    fold_batchnorm(model)
    fuse_parallel_convolutions(model)
    model.__class__ = FastInceptionV3
    object.__setattr__(model, "_compile", compile)
    object.__setattr__(model, "_parallel", parallel)
    return model
