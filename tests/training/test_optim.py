"""TensorFlow's RMSProp, its staircase schedule and global-norm clipping, against references.

The reference for RMSProp is TensorFlow's documented ``ApplyRMSProp`` update written out in
float64 numpy (TensorFlow itself is not installable here), and ``torch.optim.RMSprop`` where
the two algorithms coincide.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_inception.training.optim import (
    TFRMSProp,
    clip_by_global_norm,
    constant,
    global_norm,
    staircase_decay,
)

# float32 arithmetic against a float64 reference over a few steps: a few ulps of float32.
FLOAT32_TOLERANCE = 1e-6


def tf_rmsprop_reference(params, grads, lr_at, decay=0.9, momentum=0.9, epsilon=1.0):
    """TF's ApplyRMSProp in float64: ms starts at ONE, epsilon inside the square root."""
    w = np.asarray(params, np.float64).copy()
    ms = np.ones_like(w)
    mom = np.zeros_like(w)
    for step, g in enumerate(grads):
        g = np.asarray(g, np.float64)
        ms = decay * ms + (1 - decay) * g * g
        mom = momentum * mom + lr_at(step) * g / np.sqrt(ms + epsilon)
        w = w - mom
    return w


def run_mlx(optimizer, params, grads):
    weights = {"w": mx.array(np.asarray(params, np.float32))}
    for g in grads:
        weights = optimizer.apply_gradients({"w": mx.array(np.asarray(g, np.float32))}, weights)
        mx.eval(weights, optimizer.state)
    return np.array(weights["w"])


def gradient_sequence(steps=6, size=257, seed=0):
    rng = np.random.default_rng(seed)
    # Mixed scales: gradients well below and well above epsilon = 1 exercise both regimes.
    scales = np.array([1e-3, 0.1, 1.0, 10.0, 100.0])
    return [
        rng.standard_normal(size) * scales[rng.integers(0, len(scales), size)]
        for _ in range(steps)
    ]


def test_tf_rmsprop_matches_float64_reference_of_tensorflow_update():
    rng = np.random.default_rng(1)
    params = rng.standard_normal(257)
    grads = gradient_sequence()
    ours = run_mlx(TFRMSProp(0.045), params, grads)
    reference = tf_rmsprop_reference(params, grads, lambda step: 0.045)
    np.testing.assert_allclose(ours, reference, rtol=FLOAT32_TOLERANCE, atol=FLOAT32_TOLERANCE)


def test_tf_rmsprop_first_step_is_damped_by_mean_square_starting_at_one():
    # One step from ms = 1: w - lr * g / sqrt(0.9 + 0.1 g^2 + 1). With ms starting at zero (MLX,
    # PyTorch) the first step would be lr * g / sqrt(0.1 g^2 + 1) instead.
    g = np.array([0.5, -2.0, 30.0])
    ours = run_mlx(TFRMSProp(0.1), np.zeros(3), [g])
    expected = -0.1 * g / np.sqrt(0.9 + 0.1 * g * g + 1.0)
    np.testing.assert_allclose(ours, expected, rtol=FLOAT32_TOLERANCE)


def test_tf_rmsprop_equals_torch_rmsprop_when_epsilon_vanishes_and_square_average_starts_at_one():
    """torch.optim.RMSprop puts epsilon outside the root and starts its average at zero; with
    epsilon 0 and its square average preset to ones it is TF's update (lr constant: torch's
    lr * buffer equals TF's buffer of lr * g)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    params = rng.standard_normal(257)
    grads = gradient_sequence(seed=3)
    weight = torch.nn.Parameter(torch.tensor(params, dtype=torch.float64))
    optimizer = torch.optim.RMSprop([weight], lr=0.01, alpha=0.9, eps=0.0, momentum=0.9)
    optimizer.state[weight] = {
        "step": torch.tensor(0.0),
        "square_avg": torch.ones_like(weight),
        "momentum_buffer": torch.zeros_like(weight),
    }
    for g in grads:
        weight.grad = torch.tensor(g, dtype=torch.float64)
        optimizer.step()
    ours = run_mlx(TFRMSProp(0.01, epsilon=1e-30), params, grads)
    np.testing.assert_allclose(
        ours, weight.detach().numpy(), rtol=FLOAT32_TOLERANCE, atol=FLOAT32_TOLERANCE
    )


def test_mlx_builtin_rmsprop_differs_from_tensorflow_rmsprop_at_epsilon_one():
    """Why the recipe needs its own optimizer: MLX's RMSprop (no momentum, epsilon outside the
    root, zero start) moves the same weights differently under the paper's epsilon of 1.0."""
    import mlx.optimizers as optim

    grads = gradient_sequence(steps=3, seed=4)
    builtin = run_mlx(optim.RMSprop(0.045, alpha=0.9, eps=1.0), np.zeros(257), grads)
    tensorflow = tf_rmsprop_reference(np.zeros(257), grads, lambda step: 0.045)
    assert np.max(np.abs(builtin - tensorflow)) > 0.1 * np.max(np.abs(tensorflow))


def test_staircase_decay_is_the_papers_schedule():
    schedule = staircase_decay(0.045, 0.94, decay_steps=10)
    for step in (0, 9, 10, 19, 20, 55):
        expected = 0.045 * 0.94 ** math.floor(step / 10)
        assert schedule(mx.array(step)).item() == pytest.approx(expected, rel=1e-6)


def test_optimizer_applies_the_rate_of_the_step_count_before_the_update():
    # TF evaluates the schedule at global_step before incrementing it: updates 0 and 1 use
    # 0.045, update 2 uses 0.045 * 0.94 when two updates make a decay period.
    rng = np.random.default_rng(5)
    params, grads = rng.standard_normal(64), gradient_sequence(steps=5, size=64, seed=6)
    ours = run_mlx(TFRMSProp(staircase_decay(0.045, 0.94, decay_steps=2)), params, grads)
    reference = tf_rmsprop_reference(params, grads, lambda step: 0.045 * 0.94 ** (step // 2))
    np.testing.assert_allclose(ours, reference, rtol=FLOAT32_TOLERANCE, atol=FLOAT32_TOLERANCE)


def test_constant_schedule_never_changes():
    schedule = constant(0.01)
    rates = [schedule(mx.array(step)).item() for step in (0, 1, 10_000)]
    assert rates == [pytest.approx(0.01)] * 3


def test_clip_by_global_norm_scales_to_the_threshold_as_tensorflow_does():
    tree = {"a": mx.array([3.0, 4.0]), "b": {"c": mx.array([12.0])}}  # global norm 13
    clipped, norm = clip_by_global_norm(tree, 2.0)
    assert norm.item() == pytest.approx(13.0)
    assert global_norm(clipped).item() == pytest.approx(2.0, rel=1e-6)
    np.testing.assert_allclose(np.array(clipped["a"]), np.array([3.0, 4.0]) * 2 / 13, rtol=1e-6)


def test_clip_by_global_norm_leaves_small_gradients_bit_identical():
    # mlx.optimizers.clip_grad_norm divides by norm + 1e-6 and would perturb these.
    tree = {"a": mx.array([0.3, -0.4]), "b": mx.array([1e-8])}
    clipped, _ = clip_by_global_norm(tree, 2.0)
    assert np.array_equal(np.array(clipped["a"]), np.array(tree["a"]))
    assert np.array_equal(np.array(clipped["b"]), np.array(tree["b"]))


def test_tf_rmsprop_trains_a_linear_model_through_optimizer_update():
    # The optimizer plugs into MLX's usual Optimizer.update(model, grads) path.
    mx.random.seed(0)
    model = nn.Linear(4, 1)
    x = mx.random.normal((64, 4))
    y = x @ mx.array([[1.0], [-2.0], [0.5], [3.0]])
    optimizer = TFRMSProp(0.05)

    def loss_fn(m):
        return mx.mean(mx.square(m(x) - y))

    first = loss_fn(model).item()
    for _ in range(100):
        loss, grads = nn.value_and_grad(model, loss_fn)(model)
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state)
    assert loss_fn(model).item() < 0.01 * first


def test_tf_rmsprop_rejects_invalid_hyperparameters():
    with pytest.raises(ValueError, match="epsilon"):
        TFRMSProp(0.1, epsilon=0.0)
    with pytest.raises(ValueError, match="decay"):
        TFRMSProp(0.1, decay=1.0)
