"""Stride-1 convolutions on the CPU as sums of shifted matrix products, forward and backward.

MLX's CPU backend computes a convolution by unfolding its input (im2col: a copy k*k times the
size of the input, made on one thread) and one matrix product. Row-major NHWC, flattened to
(N*H*W, C) rows, has a property that avoids the copy: the input pixel that kernel tap (i, j)
reads for output position r is row r + i*W + j, so

    y[r] = sum over (i, j) of x[r + i*W + j] @ w[i, j]        (r = n*H*W + h*W + w)

is k*k matrix products over *contiguous* slices of the input, accumulated in place
(``mx.addmm``). Rows whose window wraps past the right or bottom edge are computed and dropped
(for a 3x3 kernel on 147x147: 3% more work). The gradients have the same form: the weight
gradient of tap (i, j) is ``x[i*W + j :][:M].T @ dy`` with dy zero on the dropped rows, and the
input gradient is the same sum over the zero-padded dy with the kernel turned by 180 degrees.

Where the dropped rows are many (small images, wide kernels: see :data:`MAX_WASTE`) and off the
CPU, MLX's own convolution is used (:func:`conv2d` decides at call time). docs/performance.md
has the measurements.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..model.layers import pair


def _rows(x: mx.array, kernel_h: int, kernel_w: int) -> tuple[mx.array, int]:
    """Return ``x`` (N, H, W, C) as (N*H*W, C) rows, and how many output rows the shifted
    products compute: every row whose last kernel tap still falls inside the input."""
    n, height, width, channels = x.shape
    rows = x.reshape(n * height * width, channels)
    return rows, rows.shape[0] - ((kernel_h - 1) * width + kernel_w - 1)


def _shifted_products(x: mx.array, taps: mx.array) -> mx.array:
    """Return the valid (no padding) stride-1 correlation of ``x`` (N, H, W, C) with ``taps``
    (kh, kw, C, O): the sum of kh*kw matrix products over shifted row slices."""
    n, height, width, _ = x.shape
    kernel_h, kernel_w, _, out_channels = taps.shape
    rows, count = _rows(x, kernel_h, kernel_w)
    out = None
    for i in range(kernel_h):
        for j in range(kernel_w):
            start = i * width + j
            part = rows[start : start + count]
            out = part @ taps[i, j] if out is None else mx.addmm(out, part, taps[i, j])
    out = mx.pad(out, [(0, rows.shape[0] - count), (0, 0)]).reshape(n, height, width, out_channels)
    return out[:, : height - kernel_h + 1, : width - kernel_w + 1]


@mx.custom_function
def shifted_conv2d(x: mx.array, weight: mx.array) -> mx.array:
    """Return ``mx.conv2d(x, weight)`` (stride 1, no padding; weight (O, kh, kw, C)) computed as
    shifted matrix products, with gradients computed the same way."""
    return _shifted_products(x, weight.transpose(1, 2, 3, 0))


@shifted_conv2d.vjp
def _shifted_conv2d_vjp(primals, cotangent, output):
    x, weight = primals
    out_channels, kernel_h, kernel_w, channels = weight.shape
    n, height, width, _ = x.shape
    # Input gradient: the full correlation of dy with the kernel turned by 180 degrees.
    padded = mx.pad(cotangent, [(0, 0), (kernel_h - 1,) * 2, (kernel_w - 1,) * 2, (0, 0)])
    turned = weight[:, ::-1, ::-1, :].transpose(1, 2, 0, 3)  # (kh, kw, O, C)
    dx = _shifted_products(padded, turned)
    # Weight gradient: dy on the input's grid (zero where a window would wrap), one product per
    # kernel tap with the same input rows the forward pass read.
    grid = mx.pad(cotangent, [(0, 0), (0, kernel_h - 1), (0, kernel_w - 1), (0, 0)])
    rows, count = _rows(x, kernel_h, kernel_w)
    dy = grid.reshape(n * height * width, out_channels)[:count]
    taps = [rows[i * width + j : i * width + j + count].T @ dy
            for i in range(kernel_h) for j in range(kernel_w)]
    dw = mx.stack(taps).reshape(kernel_h, kernel_w, channels, out_channels).transpose(3, 0, 1, 2)
    return dx, dw


def on_cpu() -> bool:
    """Return whether MLX computes on the CPU now (the kernels here are for it only)."""
    return mx.default_device().type == mx.DeviceType.cpu


#: Use the shifted products when they compute less than this many times the output's
#: positions: below it they beat MLX's convolution in every layer measured, above it (1x7 and
#: 7x1 on 17x17, 8x8 grids, the aux head's 5x5 on 5x5) they lose (docs/performance.md).
MAX_WASTE = 1.25


def waste(height: int, width: int, kernel_h: int, kernel_w: int) -> float:
    """Return how many positions the shifted products compute per output position."""
    return height * width / ((height - kernel_h + 1) * (width - kernel_w + 1))


def prefers_shifted(input_shape: tuple[int, ...], weight_shape: tuple[int, ...]) -> bool:
    """Return whether :func:`conv2d` computes this convolution as shifted products."""
    return on_cpu() and waste(*input_shape[1:3], *weight_shape[1:3]) < MAX_WASTE


def conv2d(x: mx.array, weight: mx.array) -> mx.array:
    """Return ``mx.conv2d(x, weight)`` (stride 1, no padding): on the CPU as shifted matrix
    products in float32 (as MLX's CPU convolution computes half precision) where they waste
    little (:data:`MAX_WASTE`), otherwise by MLX's own convolution."""
    if not prefers_shifted(x.shape, weight.shape):
        return mx.conv2d(x, weight)
    return shifted_conv2d(x.astype(mx.float32), weight.astype(mx.float32)).astype(x.dtype)


class ShiftedConv2d(nn.Conv2d):
    """``nn.Conv2d`` with stride 1 (same parameters), computed as shifted matrix products on the
    CPU, in float32 (as MLX's CPU convolution computes half precision), and by MLX's own
    convolution elsewhere."""

    def __call__(self, x: mx.array) -> mx.array:
        if not on_cpu() or pair(self.stride) != (1, 1) or pair(self.dilation) != (1, 1) or (
            self.groups != 1
        ):
            return super().__call__(x)
        pad_h, pad_w = pair(self.padding)
        if pad_h or pad_w:
            x = mx.pad(x, [(0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)])
        y = conv2d(x, self.weight)
        return y + self.bias if "bias" in self else y
