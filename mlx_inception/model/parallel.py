"""The fused network's eval forward pass for one image, spread over two CPU streams.

MLX's CPU backend runs each stream's operations on one thread; only the BLAS call inside a
convolution uses more. Padding, unfolding (im2col), bias + ReLU, pooling and concatenation,
about a third of this network's time on one image, therefore run on one core. A second stream
gives them the other core: the stem's convolutions are split by output rows, and in every
Inception block the branch after the fused 1x1 matmul with the most work runs on the second
stream (branch3x3dbl, branch7x7dbl, branch7x7x3, the 3x3dbl_3a half of Figure 7). Measured on
2 cores: 6.5 images/s against 5.9 for the same network on one stream.

Batches of several images stay on one stream: there the matrix products are large enough to
keep both cores busy through the BLAS, and two streams (images alternating, or branches split)
measured 5-15% slower, the two streams' BLAS threads then competing for the same cores.

The operations and values are the sequential forward's; only the matrix products of half an
input are blocked differently by the BLAS, so results agree to float32 rounding. Needs a model
rewritten by :func:`~mlx_inception.model.fuse.fuse_parallel_convolutions`.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .inception_v3 import MIXED, InceptionV3
from .layers import BasicConv2d, global_average_pool, max_pool

_streams: list[mx.Stream] = []


def cpu_streams() -> tuple[mx.Stream, mx.Stream]:
    """Return this process's two CPU streams (created on first use, then reused)."""
    if not _streams:
        _streams.extend(mx.new_stream(mx.cpu) for _ in range(2))
    return _streams[0], _streams[1]


def forward(model: InceptionV3, images: mx.array) -> mx.array:
    """Return the eval logits of ``images`` (N, H, W, 3): one image on two CPU streams,
    larger batches on the current stream."""
    if (
        images.shape[0] != 1
        or min(images.shape[1], images.shape[2]) < model._minimum_size
        or any("bn" in getattr(model, name) for name in model._stem_names() if name in model)
    ):
        return InceptionV3.__call__(model, images)  # also raises the usual errors
    return _forward_one(model, images, *cpu_streams())


def _conv_by_rows(module: BasicConv2d, x: mx.array, first: mx.Stream, second: mx.Stream):
    """A folded BasicConv2d whose output rows are computed half on each stream."""
    conv = module.conv
    (pad_h, pad_w), (stride_h, stride_w) = conv.padding, conv.stride
    kernel_h = conv.weight.shape[1]
    with mx.stream(first):
        if pad_h or pad_w:
            x = mx.pad(x, [(0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)])
    rows = (x.shape[1] - kernel_h) // stride_h + 1
    middle = rows // 2
    halves = []
    for stream, (start, stop) in ((first, (0, middle)), (second, (middle, rows))):
        with mx.stream(stream):
            part = x[:, start * stride_h : (stop - 1) * stride_h + kernel_h]
            part = mx.conv2d(part, conv.weight, stride=(stride_h, stride_w))
            halves.append(nn.relu(part + conv.bias))
    with mx.stream(first):
        return mx.concatenate(halves, axis=1)


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


def _forward_one(model: InceptionV3, x: mx.array, first: mx.Stream, second: mx.Stream):
    with mx.stream(first):
        if model.config.transform_input:
            x = model._transform_input(x)
    for name in model._stem_names():
        if name.startswith("maxpool"):
            with mx.stream(first):
                x = max_pool(x, 3, 2)
            continue
        module = getattr(model, name)
        if module.conv.weight.shape[1:3] == (1, 1):  # a matmul already: not worth splitting
            with mx.stream(first):
                x = module(x)
        else:
            x = _conv_by_rows(module, x, first, second)
    for name in MIXED:
        block = getattr(model, name)
        x = _SCHEDULES[type(block).__name__](block, x, first, second)
    with mx.stream(first):
        return model.fc(global_average_pool(x))
