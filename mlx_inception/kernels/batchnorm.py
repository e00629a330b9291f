"""Training-mode BatchNorm + ReLU as one operation with a hand-written gradient.

Autodiff through the plain expression keeps every intermediate (centred input, its square, the
normalised and the scaled input, ReLU's mask) and takes a dozen passes over the activation; this
keeps only the input and the output and takes the textbook gradient (Ioffe & Szegedy 2015,
section 3) through ReLU, whose mask is ``output > 0`` as in PyTorch:

    g = dy * (y > 0);  xc = x - mean;  k = weight / sqrt(var + eps)
    dbias = sum(g);  dweight = sum(g * xc) / sqrt(var + eps)
    dx = k * (g - mean(g)) - k * mean(g * xc) / (var + eps) * xc
"""

from __future__ import annotations

import functools
import math

import mlx.core as mx
import mlx.nn as nn

from ..model import layers
from ..model.layers import mean_over_leading_axes


@functools.cache
def batch_norm_relu(eps: float):
    """Return ``f(x, weight, bias) -> (relu(batch_norm(x)), mean, var)`` in training mode."""

    @mx.custom_function
    def forward(x: mx.array, weight: mx.array, bias: mx.array):
        mean = mean_over_leading_axes(x)
        centred = x - mean
        var = mean_over_leading_axes(mx.square(centred))
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
        g_mean = mean_over_leading_axes(g)
        gx_mean = mean_over_leading_axes(g * centred)
        k = weight * inv_std
        dx = (g - g_mean) * k - centred * (k * gx_mean * inv_var)
        count = math.prod(x.shape[:-1])
        return dx, gx_mean * inv_std * count, g_mean * count

    return forward


class BasicConv2d(layers.BasicConv2d):
    """The model's BasicConv2d whose training-mode BatchNorm + ReLU is :func:`batch_norm_relu`."""

    def __call__(self, x: mx.array) -> mx.array:
        x = self.conv(x)
        bn = self.bn
        if not bn.training:
            return nn.relu(bn(x))
        y, mean, var = batch_norm_relu(bn.eps)(x, bn.weight, bn.bias)
        bn.update_running_statistics(mean, var, math.prod(x.shape[:-1]))
        return y
