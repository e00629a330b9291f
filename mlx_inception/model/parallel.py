"""The fused network's eval forward pass, image by image, spread over two CPU streams.

MLX's CPU backend runs each stream's operations on one thread; only the BLAS call inside a
convolution uses more. Padding, unfolding (im2col), bias + ReLU, pooling and concatenation,
about a third of this network's time, therefore run on one core. A second stream gives them
the other core: the stem's convolutions are split into bands of output rows, alternating
between the streams, and in every Inception block the branch after the fused 1x1 matmul with
the most work runs on the second stream (branch3x3dbl, branch7x7dbl, branch7x7x3, the
3x3dbl_3a half of Figure 7). Measured on 2 cores: 6.5 images/s against 5.9 for the same
network on one stream.

A batch goes through image by image: as fast per image as a whole batch on one stream here
(the BLAS ran the one-image matrix products at a higher rate), and the unfolded inputs of the
stem stay those of one image (25 MB instead of 200 MB for 8), which keeps the peak memory of
a batch near that of a single image (measured, MLX's allocator at batch 8: 254 MB with the
weights, against 887 MB for the whole batch at once).

The operations and values are the sequential forward's; only the matrix products of half an
input are blocked differently by the BLAS, so results agree to float32 rounding. Needs a model
rewritten by :func:`~mlx_inception.model.fuse.fuse_parallel_convolutions`.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .conv import conv2d, prefers_shifted
from .inception_v3 import MIXED, InceptionV3
from .layers import BasicConv2d, global_average_pool, max_pool

_streams: list[mx.Stream] = []


def cpu_streams() -> tuple[mx.Stream, mx.Stream]:
    """Return this process's two CPU streams (created on first use, then reused)."""
    if not _streams:
        _streams.extend(mx.new_stream(mx.cpu) for _ in range(2))
    return _streams[0], _streams[1]


#: Unfolded input (im2col) per band of a stem convolution, in bytes: at least two bands, so
#: that both streams have work.
BAND_BYTES = 8 << 20


def forward(model: InceptionV3, images: mx.array, stop_at: str = "fc") -> mx.array:
    """Return the eval logits of ``images`` (N, H, W, 3), image by image on two CPU streams.

    ``stop_at``: return that layer's activation instead, computing nothing after it, as
    :meth:`InceptionV3.features` does (``"avgpool"``, a stem module, an Inception module).
    """
    if min(images.shape[1], images.shape[2]) < model._minimum_size or any(
        "bn" in getattr(model, name) for name in model._stem_names() if name in model
    ):  # the usual errors, or a model whose BatchNorms are not folded
        return sequential_forward(model, images, stop_at)
    first, second = cpu_streams()
    outputs = [_forward_one(model, images[i : i + 1], first, second, stop_at)
               for i in range(images.shape[0])]
    if len(outputs) == 1:
        return outputs[0]
    with mx.stream(first):
        return mx.concatenate(outputs, axis=0)


def sequential_forward(model: InceptionV3, images: mx.array, stop_at: str = "fc") -> mx.array:
    """Return what :func:`forward` returns, computed by the plain sequential network."""
    if stop_at == "fc":
        return InceptionV3.__call__(model, images)
    return InceptionV3.features(model, images, stop_at)


def _conv_by_rows(module: BasicConv2d, x: mx.array, first: mx.Stream, second: mx.Stream):
    """A folded BasicConv2d computed in bands of output rows, alternating between streams."""
    conv = module.conv
    (pad_h, pad_w), (stride_h, stride_w) = conv.padding, conv.stride
    out_channels, kernel_h, kernel_w, in_channels = conv.weight.shape
    with mx.stream(first):
        if pad_h or pad_w:
            x = mx.pad(x, [(0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)])
    shifted = prefers_shifted(x.shape, conv.weight.shape)  # the whole input's choice, per band
    rows = (x.shape[1] - kernel_h) // stride_h + 1
    columns = (x.shape[2] - kernel_w) // stride_w + 1
    unfolded_row = x.shape[0] * columns * kernel_h * kernel_w * in_channels * x.itemsize
    bands = max(2, -(-rows * unfolded_row // BAND_BYTES))
    edges = [rows * b // bands for b in range(bands + 1)]
    parts = []
    for band, (start, stop) in enumerate(zip(edges, edges[1:], strict=False)):
        with mx.stream(first if band % 2 == 0 else second):
            part = x[:, start * stride_h : (stop - 1) * stride_h + kernel_h]
            if (stride_h, stride_w) == (1, 1):
                part = conv2d(part, conv.weight, shifted)
            else:
                part = mx.conv2d(part, conv.weight, stride=(stride_h, stride_w))
            parts.append(nn.relu(part + conv.bias))
    with mx.stream(first):
        return mx.concatenate(parts, axis=1)


def _inception_a(block, x, first, second):
    with mx.stream(first):
        b1, b5, b3, bp = block.pointwise(x)
    with mx.stream(second):
        b3 = block.branch3x3dbl_3(block.branch3x3dbl_2(b3))
    with mx.stream(first):
        b5 = block.branch5x5_2(b5)
        return mx.concatenate([b1, b5, b3, bp], axis=-1)


def _inception_b(block, x, first, second):
    with mx.stream(second):
        bd = block.branch3x3dbl_3(block.branch3x3dbl_2(block.branch3x3dbl_1(x)))
        bp = max_pool(x, 3, 2)
    with mx.stream(first):
        b3 = block.branch3x3(x)
        return mx.concatenate([b3, bd, bp], axis=-1)


def _inception_c(block, x, first, second):
    with mx.stream(first):
        b1, b7, bd, bp = block.pointwise(x)
    with mx.stream(second):
        bd = block.branch7x7dbl_3(block.branch7x7dbl_2(bd))
        bd = block.branch7x7dbl_5(block.branch7x7dbl_4(bd))
    with mx.stream(first):
        b7 = block.branch7x7_3(block.branch7x7_2(b7))
        return mx.concatenate([b1, b7, bd, bp], axis=-1)


def _inception_d(block, x, first, second):
    with mx.stream(first):
        b3, b7 = block.pointwise(x)
    with mx.stream(second):
        b7 = block.branch7x7x3_4(block.branch7x7x3_3(block.branch7x7x3_2(b7)))
    with mx.stream(first):
        b3 = block.branch3x3_2(b3)
        bp = max_pool(x, 3, 2)
        return mx.concatenate([b3, b7, bp], axis=-1)


def _inception_e(block, x, first, second):
    with mx.stream(first):
        parts = block.pointwise(x)
        b1, b3, bd = parts[:3]
    with mx.stream(second):
        bd = block.branch3x3dbl_2(bd)
        bd_a = block.branch3x3dbl_3a(bd)
    with mx.stream(first):
        bp = parts[3] if block.pool_fused else block.branch_pool(block._pool(x))
        b3 = [block.branch3x3_2a(b3), block.branch3x3_2b(b3)]
        bd_b = block.branch3x3dbl_3b(bd)
        return mx.concatenate([b1, *b3, bd_a, bd_b, bp], axis=-1)


_SCHEDULES = {
    "FusedInceptionA": _inception_a,
    "FusedInceptionB": _inception_b,
    "FusedInceptionC": _inception_c,
    "FusedInceptionD": _inception_d,
    "FusedInceptionE": _inception_e,
}


def _forward_one(model: InceptionV3, x: mx.array, first: mx.Stream, second: mx.Stream,
                 stop_at: str):
    with mx.stream(first):
        if model.config.transform_input:
            x = model._transform_input(x)
    for name in model._stem_names():
        if name.startswith("maxpool"):
            with mx.stream(first):
                x = max_pool(x, 3, 2)
        elif (module := getattr(model, name)).conv.weight.shape[1:3] == (1, 1):
            with mx.stream(first):  # a matmul already: not worth splitting
                x = module(x)
        else:
            x = _conv_by_rows(module, x, first, second)
        if name == stop_at:
            return x
    for name in MIXED:
        block = getattr(model, name)
        x = _SCHEDULES[type(block).__name__](block, x, first, second)
        if name == stop_at:
            return x
    with mx.stream(first):
        x = global_average_pool(x)
        return x if stop_at == "avgpool" else model.fc(x)
