"""Strided convolutions and pools whose gradients MLX's CPU backend computes slowly, with the
same forward pass and the same gradients computed another way.

MLX differentiates a stride-2 convolution or a strided pool through a convolution with a
dilated input or a scatter through a strided view; its CPU backend runs those as plain loops,
which took most of a training step's time (docs/performance.md). Here:

- a strided convolution's input gradient is one matrix product, ``dy @ W`` (every output
  position's contribution to its k x k window), folded back onto the input grid;
- a strided max pool sends each window's gradient to its first maximum (PyTorch's rule; MLX's
  own splits it between tied maxima, which after a ReLU are zeros whose gradient the ReLU
  drops anyway), folded back the same way;
- an average pool (no padding) spreads it evenly over the window.

The fold adds each window's values into s x s "parity planes" of the input (rows and columns
congruent modulo the stride), shifted by whole steps, then interleaves the planes: pads, adds
and one reshape, all of which MLX runs at memory speed. Forward passes are MLX's own.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..model import layers
from ..model.layers import pair
from .conv import on_cpu


def fold_windows(
    taps: list[tuple[tuple[int, int], mx.array]], height: int, width: int, stride: int
) -> mx.array:
    """Return the (N, height, width, C) sum of window values placed on the input grid.

    ``taps`` pairs each window offset (i, j) with an (N, OH, OW, C) array: the value for input
    pixel (stride * oh + i, stride * ow + j) of output position (oh, ow)'s window. Overlapping
    windows add up; pixels no window reaches get 0.
    """
    first = taps[0][1]
    n, out_h, out_w, channels = first.shape
    reach_h = max(i for (i, _), _ in taps) // stride
    reach_w = max(j for (_, j), _ in taps) // stride
    rows, cols = out_h + reach_h, out_w + reach_w
    planes: dict[tuple[int, int], mx.array] = {}
    for (i, j), values in taps:
        down, right = i // stride, j // stride
        shifted = mx.pad(values, [
            (0, 0), (down, rows - out_h - down), (right, cols - out_w - right), (0, 0)
        ])
        key = (i % stride, j % stride)
        planes[key] = shifted if key not in planes else planes[key] + shifted
    zeros = mx.zeros((n, rows, cols, channels), dtype=first.dtype)
    grid = mx.stack(
        [mx.stack([planes.get((r, t), zeros) for t in range(stride)], axis=3)
         for r in range(stride)],
        axis=2,
    )  # (N, rows, stride, cols, stride, C): input row = rows_index * stride + r
    grid = grid.reshape(n, rows * stride, cols * stride, channels)
    if grid.shape[1] < height or grid.shape[2] < width:  # pixels no window reaches
        grid = mx.pad(grid, [(0, 0), (0, max(0, height - grid.shape[1])),
                             (0, max(0, width - grid.shape[2])), (0, 0)])
    return grid[:, :height, :width]


def _windows(x: mx.array, kernel: int, stride: int, out_h: int, out_w: int):
    """Return ((i, j), the (N, OH, OW, C) strided view of each window's pixel (i, j))."""
    last_h, last_w = stride * (out_h - 1) + 1, stride * (out_w - 1) + 1
    return [((i, j), x[:, i : i + last_h : stride, j : j + last_w : stride])
            for i in range(kernel) for j in range(kernel)]


@mx.custom_function
def _strided_conv2d(x: mx.array, weight: mx.array, stride: tuple, padding: tuple) -> mx.array:
    return mx.conv2d(x, weight, stride=stride, padding=padding)


@_strided_conv2d.vjp
def _strided_conv2d_vjp(primals, cotangent, output):
    x, weight, stride, padding = primals
    out_channels, kernel_h, kernel_w, channels = weight.shape
    n, out_h, out_w, _ = cotangent.shape
    columns = cotangent.reshape(-1, out_channels) @ weight.reshape(out_channels, -1)
    columns = columns.reshape(n, out_h, out_w, kernel_h, kernel_w, channels)
    taps = [((i, j), columns[:, :, :, i, j]) for i in range(kernel_h) for j in range(kernel_w)]
    (pad_h, pad_w), (height, width) = padding, x.shape[1:3]
    dx = fold_windows(taps, height + 2 * pad_h, width + 2 * pad_w, stride[0])
    dx = dx[:, pad_h : pad_h + height, pad_w : pad_w + width]
    # MLX's own weight gradient is fast (a convolution of x with dy).
    _, (dw,) = mx.vjp(lambda w: mx.conv2d(x, w, stride=stride, padding=padding),
                      [weight], [cotangent])
    return dx, dw, None, None


class StridedConv2d(nn.Conv2d):
    """``nn.Conv2d`` with a square stride > 1 and a fast input gradient (same parameters)."""

    def __call__(self, x: mx.array) -> mx.array:
        stride, padding = pair(self.stride), pair(self.padding)
        if not on_cpu() or stride[0] != stride[1] or pair(self.dilation) != (1, 1) or (
            self.groups != 1
        ):
            return super().__call__(x)
        y = _strided_conv2d(x, self.weight, stride, padding)
        return y + self.bias if "bias" in self else y


@mx.custom_function
def _max_pool(x: mx.array, kernel: int, stride: int) -> mx.array:
    return nn.MaxPool2d(kernel, stride)(x)


@_max_pool.vjp
def _max_pool_vjp(primals, cotangent, output):
    x, kernel, stride = primals
    zero = mx.array(0, cotangent.dtype)
    taps, unclaimed = [], None
    # Window pixels in reading order; the first one equal to the maximum takes the gradient.
    for offset, pixel in _windows(x, kernel, stride, output.shape[1], output.shape[2]):
        hit = pixel == output
        if unclaimed is None:
            unclaimed = mx.logical_not(hit)
        else:
            hit = mx.logical_and(hit, unclaimed)
            unclaimed = mx.logical_and(unclaimed, mx.logical_not(hit))
        taps.append((offset, mx.where(hit, cotangent, zero)))
    return fold_windows(taps, x.shape[1], x.shape[2], stride), None, None


@mx.custom_function
def _avg_pool(x: mx.array, kernel: int, stride: int) -> mx.array:
    return nn.AvgPool2d(kernel, stride)(x)


@_avg_pool.vjp
def _avg_pool_vjp(primals, cotangent, output):
    x, kernel, stride = primals
    share = cotangent / (kernel * kernel)
    taps = [((i, j), share) for i in range(kernel) for j in range(kernel)]
    return fold_windows(taps, x.shape[1], x.shape[2], stride), None, None


class MaxPool2d(layers.MaxPool2d):
    """The model's max pool with, when strided on the CPU, the fast gradient."""

    def __call__(self, x: mx.array) -> mx.array:
        if self.stride == 1 or self.padding or not on_cpu():
            return super().__call__(x)
        return _max_pool(x, self.kernel_size, self.stride)


class AvgPool2d(layers.AvgPool2d):
    """The model's average pool with, when strided on the CPU, the fast gradient."""

    def __call__(self, x: mx.array) -> mx.array:
        if self.stride == 1 or not on_cpu():
            return super().__call__(x)
        return _avg_pool(x, self.kernel_size, self.stride)
