"""Strided convolutions and pools give MLX's own gradients (and PyTorch's tie rule), fast.

``mlx_inception.kernels.strided`` computes the input gradient of stride-2 convolutions and
strided pools by folding window values back onto the input grid instead of MLX's dilated
convolution / strided scatter. Same values up to float32 summation order: asserted
max|ours - MLX's| <= 1e-5 * max|MLX's| (measured about 1e-7). The forward passes are MLX's own
and asserted identical.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import CPU_ONLY, runs_on_gpu
from mlx.utils import tree_flatten

from mlx_inception import kernels
from mlx_inception.kernels import conv, strided
from mlx_inception.model import AvgPool2d, BasicConv2d, InceptionV3, MaxPool2d

pytestmark = pytest.mark.skipif(runs_on_gpu(), reason=CPU_ONLY)

TOLERANCE = 1e-5


def relative_error(actual: mx.array, expected: mx.array) -> float:
    return float(mx.abs(actual - expected).max() / mx.abs(expected).max())


@pytest.mark.parametrize(("shape", "kernel", "stride", "padding"), [
    ((2, 9, 9, 5), 3, 2, 0),  # Inception's strided convolutions: 3x3/2, no padding
    ((2, 10, 11, 5), 3, 2, 1),  # even and odd sides, padding
    ((2, 17, 17, 4), 5, 3, 0),  # another stride, a pixel row no window reaches
])
def test_strided_convolution_gives_mlx_gradients(shape, kernel, stride, padding):
    mx.random.seed(0)
    ours = strided.StridedConv2d(shape[-1], 6, kernel, stride=stride, padding=padding)
    theirs = nn.Conv2d(shape[-1], 6, kernel, stride=stride, padding=padding)
    theirs.update(ours.parameters())
    x = mx.random.normal(shape)
    weights = mx.random.normal(theirs(x).shape)
    assert mx.array_equal(ours(x), theirs(x))

    def loss(module, x):
        return (module(x) * weights).sum()

    for module in (ours, theirs):
        module.grads = nn.value_and_grad(module, loss)(module, x)[1]
        module.dx = mx.grad(lambda x, m=module: loss(m, x))(x)
    assert relative_error(ours.dx, theirs.dx) <= TOLERANCE
    assert relative_error(ours.grads["weight"], theirs.grads["weight"]) <= TOLERANCE
    assert relative_error(ours.grads["bias"], theirs.grads["bias"]) <= TOLERANCE


@pytest.mark.parametrize(("pool", "reference"), [
    (strided.MaxPool2d, nn.MaxPool2d), (strided.AvgPool2d, nn.AvgPool2d),
])
@pytest.mark.parametrize(("shape", "kernel", "stride"), [
    ((2, 9, 9, 3), 3, 2), ((2, 10, 10, 3), 3, 2), ((2, 17, 17, 4), 5, 3),
])
def test_strided_pools_give_mlx_outputs_and_gradients(pool, reference, shape, kernel, stride):
    x = mx.random.normal(shape, key=mx.random.key(1))
    expected = reference(kernel, stride)(x)
    assert mx.array_equal(pool(kernel, stride)(x), expected)
    weights = mx.random.normal(expected.shape, key=mx.random.key(2))
    ours = mx.grad(lambda x: (pool(kernel, stride)(x) * weights).sum())(x)
    theirs = mx.grad(lambda x: (reference(kernel, stride)(x) * weights).sum())(x)
    assert relative_error(ours, theirs) <= TOLERANCE


def test_max_pool_gives_a_tied_window_gradient_to_its_first_maximum_like_pytorch():
    torch = pytest.importorskip("torch")
    # Zeros after a ReLU tie often; integers make ties everywhere.
    x = np.random.default_rng(3).integers(0, 3, (1, 9, 9, 2)).astype(np.float32)
    weights = np.random.default_rng(4).standard_normal((1, 4, 4, 2)).astype(np.float32)
    ours = mx.grad(lambda x: (strided.MaxPool2d(3, 2)(x) * mx.array(weights)).sum())(
        mx.array(x))
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    out = torch.nn.functional.max_pool2d(tx, 3, 2)
    (out * torch.from_numpy(weights.transpose(0, 3, 1, 2).copy())).sum().backward()
    np.testing.assert_allclose(np.array(ours), tx.grad.numpy().transpose(0, 2, 3, 1), atol=1e-6)


def test_install_gives_every_layer_of_the_network_its_kernel():
    model = kernels.install(InceptionV3())
    modules = dict(model.named_modules())
    assert isinstance(modules["Mixed_6a.branch3x3.conv"], strided.StridedConv2d)
    assert isinstance(modules["Mixed_6b.branch7x7_2.conv"], conv.ShiftedConv2d)  # stride 1
    assert isinstance(modules["maxpool1"], strided.MaxPool2d)
    assert isinstance(modules["AuxLogits.pool"], strided.AvgPool2d)
    assert all(type(m) is not BasicConv2d for m in modules.values())  # BatchNorm + ReLU too


def test_with_the_switch_off_install_leaves_the_papers_layers(monkeypatch):
    monkeypatch.setenv(kernels.ENVIRONMENT_VARIABLE, "0")
    model = kernels.install(InceptionV3())
    kinds = {type(m) for m in model.modules()}
    assert {BasicConv2d, MaxPool2d, AvgPool2d, nn.Conv2d} <= kinds
    assert not any(t.__module__.startswith("mlx_inception.kernels") for t in kinds)


def test_the_kernels_keep_the_networks_parameters_and_eval_output():
    mx.random.seed(7)
    plain = InceptionV3()
    plain.eval()
    fast = InceptionV3(init_weights=False)
    fast.update(plain.parameters())
    kernels.install(fast).eval()
    x = mx.random.normal((1, 299, 299, 3))
    assert sorted(dict(tree_flatten(fast.parameters()))) == sorted(
        dict(tree_flatten(plain.parameters())))
    assert relative_error(fast.features(x, "Mixed_5d"), plain.features(x, "Mixed_5d")) <= 1e-4
