"""The building block of every Inception-v3 layer (convolution, batch normalisation, ReLU) and
the pools between them."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

# Every BatchNorm in Inception-v3 uses eps = 0.001 (TF-slim's value, kept by torchvision);
# MLX's default of 1e-5 would shift every activation of ported weights.
BATCHNORM_EPS = 1e-3


def mean_over_leading_axes(x: mx.array) -> mx.array:
    """Return the mean of ``x`` over every axis but the last (the per-channel mean of NHWC)."""
    # One axis at a time: a single float32 reduction over N*H*W values per channel loses
    # precision that PyTorch's blocked reduction keeps; per-axis means stay as close as it.
    for axis in reversed(range(x.ndim - 1)):
        x = mx.mean(x, axis=axis)
    return x


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
            mean = mean_over_leading_axes(x)
            var = mean_over_leading_axes(mx.square(x - mean))
            self.update_running_statistics(mean, var, math.prod(x.shape[:-1]))
        return (x - mean) * mx.rsqrt(var + self.eps) * self.weight + self.bias

    def update_running_statistics(self, mean: mx.array, var: mx.array, count: int) -> None:
        """Move the running statistics towards a batch's ``mean`` and biased ``var``."""
        unbiased = var * (count / max(count - 1, 1))
        m = self.momentum
        self.running_mean = (1 - m) * self.running_mean + m * mx.stop_gradient(mean)
        self.running_var = (1 - m) * self.running_var + m * mx.stop_gradient(unbiased)


def pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """Return a kernel size, stride or padding as (height, width)."""
    return (value, value) if isinstance(value, int) else tuple(value)


class BasicConv2d(nn.Module):
    """Conv2d (no bias) -> BatchNorm(eps=0.001) -> ReLU, torchvision's ``BasicConv2d``."""

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
        self.conv = nn.Conv2d(
            in_channels, out_channels, pair(kernel_size), pair(stride), pair(padding), bias=False
        )
        self.bn = BatchNorm(out_channels)
        # torchvision's init_weights draws each conv from a truncated normal with this stddev.
        self.stddev = stddev

    def __call__(self, x: mx.array) -> mx.array:
        return nn.relu(self.bn(self.conv(x)))


class MaxPool2d(nn.MaxPool2d):
    """Max pool, torchvision's ``F.max_pool2d(x, kernel_size, stride, padding)`` (floor mode)."""

    def __init__(self, kernel_size: int, stride: int, padding: int = 0):
        super().__init__(kernel_size, stride, padding)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding


class AvgPool2d(nn.AvgPool2d):
    """Average pool without padding, torchvision's ``F.avg_pool2d(x, kernel_size, stride)``."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__(kernel_size, stride)
        self.kernel_size, self.stride = kernel_size, stride


class AvgPool3x3(nn.Module):
    """3x3 average pool, stride 1, padding 1, as ``F.avg_pool2d(x, 3, 1, 1)``.

    ``count_include_pad=True`` (torchvision) divides every window by 9, padded zeros included;
    ``False`` divides by the number of real pixels, as TensorFlow's "SAME" pooling does.
    """

    def __init__(self, count_include_pad: bool = True):
        super().__init__()
        self.count_include_pad = count_include_pad

    def __call__(self, x: mx.array) -> mx.array:
        return avg_pool_3x3_same(x, self.count_include_pad)


def avg_pool_3x3_same(x: mx.array, count_include_pad: bool = True) -> mx.array:
    """Return the 3x3, stride-1, padding-1 average pool of ``x`` (see :class:`AvgPool3x3`)."""
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


def global_average_pool(x: mx.array) -> mx.array:
    """Return the mean over height and width: ``adaptive_avg_pool2d(x, 1)`` flattened (N, C)."""
    return mx.mean(x, axis=(1, 2))
