"""The CPU kernels: stride-1 convolutions as shifted matrix products (kernels/conv.py) and the
training-mode BatchNorm + ReLU with a hand-written gradient (kernels/batchnorm.py), each against
PyTorch's own operations.

Tolerance: max|ours - torch| <= 1e-5 * max|torch| in float32 (measured 1e-7 to 2e-6: the
sums run in a different order); the BatchNorm gradient is compared with PyTorch in float64,
where ours must be no farther than PyTorch's own float32 result (times 1.5).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import CPU_ONLY, runs_on_gpu

from mlx_inception import kernels
from mlx_inception.kernels import conv
from mlx_inception.kernels.batchnorm import batch_norm_relu
from mlx_inception.model.layers import BasicConv2d

pytestmark = pytest.mark.skipif(runs_on_gpu(), reason=CPU_ONLY)

torch = pytest.importorskip("torch")

TOLERANCE = 1e-5


def relative(ours, reference) -> float:
    reference = np.asarray(reference, dtype=np.float64)
    return float(np.abs(np.asarray(ours, dtype=np.float64) - reference).max()
                 / np.abs(reference).max())


def nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def nhwc(x) -> np.ndarray:
    return x.detach().numpy().transpose(0, 2, 3, 1)


KERNELS = [(1, 1), (3, 3), (1, 7), (7, 1), (5, 5), (1, 3), (3, 1)]


@pytest.mark.parametrize("kernel", KERNELS)
def test_shifted_conv2d_and_its_gradients_equal_torchs(kernel):
    rng = np.random.default_rng(sum(kernel))
    x = rng.standard_normal((2, 11, 9, 5)).astype(np.float32)  # not square: rows != columns
    weight = rng.standard_normal((6, *kernel, 5)).astype(np.float32)
    out_h, out_w = 11 - kernel[0] + 1, 9 - kernel[1] + 1
    upstream = rng.standard_normal((2, out_h, out_w, 6)).astype(np.float32)

    def loss(x, w):
        return (conv.shifted_conv2d(x, w) * mx.array(upstream)).sum()

    y = conv.shifted_conv2d(mx.array(x), mx.array(weight))
    dx, dw = mx.grad(loss, argnums=(0, 1))(mx.array(x), mx.array(weight))

    tx = torch.from_numpy(nchw(x)).requires_grad_()
    tw = torch.from_numpy(np.ascontiguousarray(weight.transpose(0, 3, 1, 2))).requires_grad_()
    ty = torch.nn.functional.conv2d(tx, tw)
    (ty * torch.from_numpy(nchw(upstream))).sum().backward()

    assert y.shape == (2, out_h, out_w, 6)
    assert relative(y, nhwc(ty)) <= TOLERANCE
    assert relative(dx, nhwc(tx.grad)) <= TOLERANCE
    assert relative(dw, tw.grad.numpy().transpose(0, 2, 3, 1)) <= TOLERANCE


def test_a_kernel_as_large_as_the_input_gives_one_position():
    rng = np.random.default_rng(0)
    x, weight = rng.standard_normal((3, 3, 3, 4)), rng.standard_normal((2, 3, 3, 4))
    y = conv.shifted_conv2d(mx.array(x, mx.float32), mx.array(weight, mx.float32))
    expected = np.einsum("nhwc,ohwc->no", x, weight)[:, None, None, :]
    assert relative(y, expected) <= TOLERANCE


@pytest.mark.parametrize(("kernel", "padding"), [(3, 1), ((1, 7), (0, 3)), ((7, 1), (3, 0)),
                                                 (5, 2), (3, 0)])
def test_the_conv2d_layer_equals_nn_conv2d_with_padding_and_bias(kernel, padding):
    mx.random.seed(1)
    reference = nn.Conv2d(4, 6, kernel, padding=padding, bias=True)
    ours = conv.ShiftedConv2d(4, 6, kernel, padding=padding, bias=True)
    ours.update(reference.parameters())
    x = mx.random.normal((2, 10, 12, 4))
    assert relative(ours(x), reference(x)) <= TOLERANCE


def test_half_precision_input_is_computed_in_float32_and_returned_in_its_dtype():
    mx.random.seed(2)
    layer = conv.ShiftedConv2d(8, 8, 3, padding=1, bias=False)
    x = mx.random.normal((1, 40, 40, 8))
    assert conv.prefers_shifted((1, 42, 42, 8), layer.weight.shape)
    for dtype in (mx.float16, mx.bfloat16):
        half = layer(x.astype(dtype))
        assert half.dtype == dtype
        # One rounding of the input and one of the output: within a few half-precision ulps.
        assert relative(half.astype(mx.float32), layer(x)) <= 2e-2


def test_off_the_cpu_the_layer_is_mlxs_own_convolution(monkeypatch):
    mx.random.seed(3)
    layer = conv.ShiftedConv2d(3, 5, 3, padding=1)
    x = mx.random.normal((1, 8, 8, 3))
    monkeypatch.setattr(conv, "on_cpu", lambda: False)
    np.testing.assert_array_equal(np.array(layer(x)), np.array(nn.Conv2d.__call__(layer, x)))


def test_every_stride_1_basic_conv2d_gets_the_shifted_convolution():
    layer = kernels.install(BasicConv2d(8, 8, (1, 7), padding=(0, 3)))
    assert type(layer.conv) is conv.ShiftedConv2d


def batch_norm_relu_gradients(x, weight, bias, upstream, dtype):
    tx = torch.tensor(nchw(x), dtype=dtype, requires_grad=True)
    tw = torch.tensor(weight, dtype=dtype, requires_grad=True)
    tb = torch.tensor(bias, dtype=dtype, requires_grad=True)
    y = torch.relu(torch.nn.functional.batch_norm(tx, None, None, tw, tb, training=True,
                                                  eps=1e-3))
    (y * torch.tensor(nchw(upstream), dtype=dtype)).sum().backward()
    return nhwc(y), [nhwc(tx.grad), tw.grad.numpy(), tb.grad.numpy()]


def test_training_batchnorm_relu_gradient_is_as_close_to_float64_as_torchs_float32():
    rng = np.random.default_rng(4)
    # An offset mean and a spread of scales, as convolution outputs have.
    x = (rng.standard_normal((4, 13, 13, 16)) * 3 + 1.5).astype(np.float32)
    weight = rng.standard_normal(16).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    upstream = rng.standard_normal(x.shape).astype(np.float32)
    fused = batch_norm_relu(1e-3)

    def loss(x, w, b):
        return (fused(x, w, b)[0] * mx.array(upstream)).sum()

    ours = mx.grad(loss, argnums=(0, 1, 2))(mx.array(x), mx.array(weight), mx.array(bias))
    y = fused(mx.array(x), mx.array(weight), mx.array(bias))[0]
    y64, exact = batch_norm_relu_gradients(x, weight, bias, upstream, torch.float64)
    _, torch32 = batch_norm_relu_gradients(x, weight, bias, upstream, torch.float32)
    assert relative(y, y64) <= TOLERANCE
    for name, mine, theirs, reference in zip(("dx", "dweight", "dbias"), ours, torch32, exact,
                                             strict=True):
        assert relative(mine, reference) <= max(1.5 * relative(theirs, reference), 1e-6), name


def plain_and_kernel_layers(seed: int) -> tuple[BasicConv2d, BasicConv2d]:
    """A BasicConv2d and the same layer with the kernels installed."""
    mx.random.seed(seed)
    plain, fused = BasicConv2d(8, 8, 1), BasicConv2d(8, 8, 1)
    fused.update(plain.parameters())
    return plain, kernels.install(fused)


def test_training_batchnorm_relu_updates_the_running_statistics_as_the_plain_path():
    plain, fused = plain_and_kernel_layers(5)
    x = mx.random.normal((2, 5, 5, 8)) * 2 + 1
    assert relative(fused(x), plain(x)) <= TOLERANCE
    np.testing.assert_allclose(np.array(fused.bn.running_mean), np.array(plain.bn.running_mean),
                               rtol=1e-6)
    np.testing.assert_allclose(np.array(fused.bn.running_var), np.array(plain.bn.running_var),
                               rtol=1e-6)
    assert not np.allclose(np.array(fused.bn.running_var), 1.0)  # they did move


def test_eval_batchnorm_relu_is_the_plain_expression():
    plain, fused = plain_and_kernel_layers(6)
    for layer in (plain, fused):
        layer.bn.update({"running_mean": mx.ones((8,)) * 0.3, "running_var": mx.ones((8,)) * 2})
        layer.eval()
    x = mx.random.normal((2, 5, 5, 8))
    assert relative(fused(x), plain(x)) <= TOLERANCE


@pytest.mark.parametrize(("input_shape", "weight_shape", "shifted"), [
    ((1, 147, 147, 32), (64, 3, 3, 32), True),  # the stem: 3% more positions
    ((1, 39, 39, 48), (64, 5, 5, 48), True),  # Mixed_5b's padded 5x5: 24% more
    ((1, 17, 17, 768), (192, 1, 1, 768), True),  # 1x1: none more
    ((1, 17, 23, 128), (128, 1, 7, 128), False),  # 1x7 on 17x17, padded: 35% more
    ((1, 5, 5, 128), (768, 5, 5, 128), False),  # the aux head: 25 times the positions
])
def test_conv2d_uses_the_shifted_products_only_where_they_waste_little(
        monkeypatch, input_shape, weight_shape, shifted):
    calls = []
    original = conv.shifted_conv2d
    monkeypatch.setattr(conv, "shifted_conv2d", lambda x, w: calls.append(1) or original(x, w))
    x, weight = mx.random.normal(input_shape), mx.random.normal(weight_shape) * 0.1
    assert relative(conv.conv2d(x, weight), mx.conv2d(x, weight)) <= TOLERANCE
    assert bool(calls) is shifted
