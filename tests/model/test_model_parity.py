"""The MLX network gives torchvision's numbers for the same weights and input.

Tolerance: float32 arithmetic summed in a different order (MLX's and PyTorch's convolutions,
pooling and means differ in accumulation order), so outputs agree to a relative error of
``max|mlx - torch| <= 1e-4 * max|torch|`` for logits and every intermediate activation.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import (
    TRAINING_TOLERANCE,
    assert_close,
    assert_gradients_as_accurate_as_torchs,
    make_reference_model,
    random_images,
    to_nhwc,
)

import mlx_inception
from mlx_inception.checkpoints.convert import convert_file
from mlx_inception.loading import build

torch = pytest.importorskip("torch")

def torch_forward(model, images: np.ndarray):
    with torch.no_grad():
        return model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))


@pytest.fixture(scope="module")
def converted(reference_checkpoints):
    return mlx_inception.load(reference_checkpoints["pth"])


def test_eval_logits_match_torchvision_at_299_with_batch_of_two(reference_model, converted):
    images = random_images((2, 299, 299, 3), seed=1)
    assert_close(converted(mx.array(images)), torch_forward(reference_model, images).numpy())


def test_every_module_output_matches_torchvision(reference_model, converted):
    images = random_images((1, 299, 299, 3), seed=2)
    recorded = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, out, name=name: recorded.__setitem__(name, to_nhwc(out))
        )
        for name, module in reference_model.named_children()
        if name not in ("AuxLogits", "dropout", "avgpool")
    ]
    try:
        torch_forward(reference_model, images)
    finally:
        for hook in hooks:
            hook.remove()
    _, taps = converted.forward_with_taps(mx.array(images))
    assert len(recorded) == 19  # 7 stem modules, 11 Inception modules, fc
    for name, expected in recorded.items():
        assert_close(taps[name], expected, name)


def test_branch_taps_concatenate_to_the_module_output(converted):
    _, taps = converted.forward_with_taps(mx.array(random_images((1, 107, 107, 3), seed=3)))
    for module in ("Mixed_5b", "Mixed_6a", "Mixed_6e", "Mixed_7a", "Mixed_7c"):
        branches = [value for key, value in taps.items() if key.startswith(module + ".")]
        np.testing.assert_array_equal(np.array(mx.concatenate(branches, axis=-1)),
                                      np.array(taps[module]))
    assert set(taps) >= set(mlx_inception.tap_names()) - {"AuxLogits"}


def test_taps_leave_the_logits_unchanged(converted):
    x = mx.array(random_images((1, 107, 107, 3), seed=4))
    logits, taps = converted.forward_with_taps(x)
    np.testing.assert_array_equal(np.array(logits), np.array(converted(x)))
    np.testing.assert_array_equal(np.array(taps["fc"]), np.array(logits))


def test_safetensors_checkpoint_converts_without_torch_to_the_same_weights(
    reference_checkpoints, reference_model
):
    model = mlx_inception.load(reference_checkpoints["safetensors"])
    images = random_images((1, 299, 299, 3), seed=5)
    assert_close(model(mx.array(images)), torch_forward(reference_model, images).numpy())


@pytest.mark.parametrize("transform_input", [False, True])
def test_transform_input_matches_torchvision(reference_model, reference_checkpoints,
                                             transform_input):
    conversion = convert_file(reference_checkpoints["pth"])
    conversion.config.transform_input = transform_input
    model = build(conversion.weights, conversion.config)
    reference_model.transform_input = transform_input
    try:
        images = random_images((2, 139, 139, 3), seed=6)
        expected = torch_forward(reference_model, images).numpy()
    finally:
        reference_model.transform_input = False
    assert_close(model(mx.array(images)), expected)


@pytest.mark.parametrize("size", [(75, 75), (320, 400)], ids=["minimum-75", "non-square"])
def test_logits_match_torchvision_at_other_input_sizes(reference_model, converted, size):
    images = random_images((2 if size == (75, 75) else 1, *size, 3), seed=7)
    assert_close(converted(mx.array(images)), torch_forward(reference_model, images).numpy())


def test_training_mode_returns_logits_and_aux_logits_like_torchvision(reference_checkpoints):
    reference = make_reference_model()
    reference.dropout.p = 0.0  # dropout draws differ between frameworks
    reference.train()
    conversion = convert_file(reference_checkpoints["pth"])
    conversion.config.dropout = 0.0
    model = build(conversion.weights, conversion.config)
    model.train()
    images = random_images((2, 299, 299, 3), seed=8)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    logits, aux = model(mx.array(images))
    assert_close(logits, expected.logits.numpy(), "logits", TRAINING_TOLERANCE)
    assert_close(aux, expected.aux_logits.numpy(), "aux_logits", TRAINING_TOLERANCE)
    # BatchNorm's running statistics move exactly as PyTorch's (unbiased running variance).
    torch_stats = reference.Mixed_7c.branch_pool.bn.running_var.numpy()
    assert_close(model.Mixed_7c.branch_pool.bn.running_var, torch_stats, "running_var",
                 TRAINING_TOLERANCE)
    assert_close(model.Conv2d_1a_3x3.bn.running_mean,
                 reference.Conv2d_1a_3x3.bn.running_mean.numpy(), "running_mean",
                 TRAINING_TOLERANCE)


@pytest.mark.slow
def test_gradients_are_as_accurate_as_torchvisions_own(reference_checkpoints):
    """Training-mode gradients of a randomly initialised network are ill-conditioned: torchvision
    in float32 is itself up to ~5% away from torchvision in float64 at the first convolution. So
    the specification is: MLX's float32 gradients are no farther from the float64 reference than
    twice torchvision's float32 ones (or 1e-4 relative, whichever is larger)."""
    import copy

    import mlx.nn as nn
    from mlx.utils import tree_flatten

    reference = make_reference_model()
    reference.dropout.p = 0.0
    reference.train()
    reference64 = copy.deepcopy(reference).double()
    conversion = convert_file(reference_checkpoints["pth"])
    conversion.config.dropout = 0.0
    model = build(conversion.weights, conversion.config)
    model.train()
    images = random_images((2, 299, 299, 3), seed=9)
    labels = np.array([3, 7])
    batch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    for net, dtype in ((reference, torch.float32), (reference64, torch.float64)):
        out = net(batch.to(dtype))
        target = torch.from_numpy(labels)
        loss = torch.nn.functional.cross_entropy(out.logits, target)
        (loss + 0.4 * torch.nn.functional.cross_entropy(out.aux_logits, target)).backward()

    def loss_fn(m):
        logits, aux = m(mx.array(images))
        rows, target = mx.arange(2), mx.array(labels)
        ce = mx.mean(mx.logsumexp(logits, -1) - logits[rows, target])
        return ce + 0.4 * mx.mean(mx.logsumexp(aux, -1) - aux[rows, target])

    _, grads = nn.value_and_grad(model, loss_fn)(model)
    grads = dict(tree_flatten(grads))
    torch32 = dict(reference.named_parameters())
    torch64 = dict(reference64.named_parameters())
    names = ["fc.weight", "AuxLogits.fc.weight", "Mixed_7c.branch_pool.conv.weight",
             "Mixed_6e.branch1x1.conv.weight", "Mixed_5b.branch1x1.bn.weight",
             "Conv2d_1a_3x3.conv.weight"]
    assert_gradients_as_accurate_as_torchs(grads, torch32, torch64, names)
