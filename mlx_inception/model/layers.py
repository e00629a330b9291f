"""The building block of every Inception-v3 layer: convolution, batch normalisation, ReLU."""

from __future__ import annotations

import functools
import math

import mlx.core as mx
import mlx.nn as nn

from . import gradients
from .conv import Conv2d
from .gradients import pair

# Every BatchNorm in Inception-v3 uses eps = 0.001 (TF-slim's value, kept by torchvision);
# MLX's default of 1e-5 would shift every activation of ported weights.
BATCHNORM_EPS = 1e-3


def _mean_over_leading_axes(x: mx.array) -> mx.array:
    # One axis at a time: a single float32 reduction over N*H*W (44,402 values per channel in
    # the first layer) loses ~1e-5 relative; per-axis means keep it near 3e-7, like PyTorch.
    for axis in reversed(range(x.ndim - 1)):
        x = mx.mean(x, axis=axis)
    return x


@functools.cache
def _batch_norm_relu(eps: float):
    """Return ``f(x, weight, bias) -> (relu(batch_norm(x)), mean, var)`` in training mode, with
    its gradient written by hand.

    Autodiff through the plain expression keeps every intermediate (centred input, its square,
    the normalised and the scaled input, ReLU's mask) and takes a dozen passes over the
    activation; this keeps only the input and the output and takes the textbook gradient
    (Ioffe & Szegedy 2015, section 3) through ReLU, whose mask is ``output > 0`` as in PyTorch:

        g = dy * (y > 0);  xc = x - mean;  k = weight / sqrt(var + eps)
        dbias = sum(g);  dweight = sum(g * xc) / sqrt(var + eps)
        dx = k * (g - mean(g)) - k * mean(g * xc) / (var + eps) * xc
    """

    @mx.custom_function
    def forward(x: mx.array, weight: mx.array, bias: mx.array):
        mean = _mean_over_leading_axes(x)
        centred = x - mean
        var = _mean_over_leading_axes(mx.square(centred))
        scale = mx.rsqrt(var + eps) * weight
        return nn.relu(centred * scale + bias), mean, var

    @forward.vjp
    def backward(primals, cotangents, outputs):
        x, weight, _ = primals
        y, mean, var = outputs
        g = mx.where(y > 0, cotangents[0], mx.zeros((), dtype=y.dtype))
        centred = x - mean
        inv_var = 1.0 / (var + eps)
        inv_std = mx.sqrt(inv_var)
        g_mean = _mean_over_leading_axes(g)
        gx_mean = _mean_over_leading_axes(g * centred)
        k = weight * inv_std
        dx = (g - g_mean) * k - centred * (k * gx_mean * inv_var)
        count = math.prod(x.shape[:-1])
        return dx, gx_mean * inv_std * count, g_mean * count

    return forward


class BatchNorm(nn.BatchNorm):
    """Batch normalisation over the last axis that updates running statistics as PyTorch does.

    PyTorch stores the *unbiased* batch variance in ``running_var`` (MLX stores the biased one);
    using PyTorch's rule keeps a model trained here interchangeable with torchvision's.
    """

    def __init__(self, num_features: int, eps: float = BATCHNORM_EPS, momentum: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)

    def __call__(self, x: mx.array) -> mx.array:
        if not self.training:
            mean, var = self.running_mean, self.running_var
        else:
            mean = _mean_over_leading_axes(x)
            var = _mean_over_leading_axes(mx.square(x - mean))
            self._update_running_statistics(mean, var, math.prod(x.shape[:-1]))
        return (x - mean) * mx.rsqrt(var + self.eps) * self.weight + self.bias

    def relu(self, x: mx.array) -> mx.array:
        """Return ``relu(self(x))``; in training mode through one operation with a hand-written
        gradient, which keeps only its input and output for the backward pass."""
        if not self.training:
            return nn.relu(self(x))
        y, mean, var = _batch_norm_relu(self.eps)(x, self.weight, self.bias)
        self._update_running_statistics(mean, var, math.prod(x.shape[:-1]))
        return y

    def _update_running_statistics(self, mean: mx.array, var: mx.array, count: int) -> None:
        unbiased = var * (count / max(count - 1, 1))
        m = self.momentum
        self.running_mean = (1 - m) * self.running_mean + m * mx.stop_gradient(mean)
        self.running_var = (1 - m) * self.running_var + m * mx.stop_gradient(unbiased)


class BasicConv2d(nn.Module):
    """Conv2d (no bias) -> BatchNorm(eps=0.001) -> ReLU, torchvision's ``BasicConv2d``.

    After :func:`mlx_inception.model.fuse.fold_batchnorm` the BatchNorm is folded into the
    convolution, which then carries a bias and ``bn`` is gone.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        stddev: float = 0.1,
    ):
        super().__init__()
        # Same layer as nn.Conv2d, computed the way MLX's CPU backend runs fast: stride 1 as
        # shifted matrix products (conv.py), strided with a fast input gradient (gradients.py).
        conv = Conv2d if pair(stride) == (1, 1) else gradients.StridedConv2d
        self.conv = conv(
            in_channels, out_channels, pair(kernel_size), pair(stride), pair(padding), bias=False
        )
        self.bn = BatchNorm(out_channels)
        # torchvision's init_weights draws each conv from a truncated normal with this stddev.
        self.stddev = stddev

    def __call__(self, x: mx.array) -> mx.array:
        x = self.conv(x)
        if "bn" in self:
            return self.bn.relu(x)
        return nn.relu(x)


def avg_pool_3x3_same(x: mx.array, count_include_pad: bool = True) -> mx.array:
    """3x3 average pool, stride 1, padding 1, as ``F.avg_pool2d(x, 3, 1, 1)``.

    ``count_include_pad=True`` (torchvision) divides every window by 9, padded zeros included;
    ``False`` divides by the number of real pixels, as TensorFlow's "SAME" pooling does.
    """
    padded = mx.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    h, w = x.shape[1], x.shape[2]
    total = padded[:, 0:h] + padded[:, 1 : h + 1] + padded[:, 2 : h + 2]
    total = total[:, :, 0:w] + total[:, :, 1 : w + 1] + total[:, :, 2 : w + 2]
    if count_include_pad:
        return total / 9.0
    rows = mx.array([2.0] + [3.0] * (h - 2) + [2.0] if h > 1 else [1.0])
    cols = mx.array([2.0] + [3.0] * (w - 2) + [2.0] if w > 1 else [1.0])
    counts = rows[:, None] * cols[None, :]
    return total / counts[None, :, :, None].astype(x.dtype)


def max_pool(x: mx.array, kernel_size: int, stride: int) -> mx.array:
    """Max pool without padding (torchvision's ``F.max_pool2d(x, k, s)``, floor mode)."""
    return gradients.max_pool(x, kernel_size, stride)


def avg_pool(x: mx.array, kernel_size: int, stride: int) -> mx.array:
    """Average pool without padding (torchvision's ``F.avg_pool2d(x, k, s)``)."""
    return gradients.avg_pool(x, kernel_size, stride)


def global_average_pool(x: mx.array) -> mx.array:
    """Mean over height and width: ``adaptive_avg_pool2d(x, 1)`` flattened to (N, C)."""
    return mx.mean(x, axis=(1, 2))
