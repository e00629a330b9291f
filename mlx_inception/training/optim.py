"""RMSProp as TensorFlow defines it, its staircase schedule, and TF's global-norm clipping.

MLX's built-in ``RMSprop`` is a different algorithm: it has no momentum, adds epsilon outside the
square root and starts the mean square at zero. With the paper's epsilon of 1.0 the two diverge
from the first step, so the recipe uses this one. TensorFlow's ``ApplyRMSProp`` (the kernel
behind ``tf.train.RMSPropOptimizer``, which TF-slim and ``inception_distributed_train.py`` use):

    ms  <- decay * ms + (1 - decay) * g^2             (ms starts at ONE, not zero)
    mom <- momentum * mom + lr * g / sqrt(ms + epsilon)
    w   <- w - mom
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
from mlx.optimizers import Optimizer
from mlx.utils import tree_map, tree_reduce


class TFRMSProp(Optimizer):
    """TensorFlow's RMSProp with momentum (``tf.train.RMSPropOptimizer``, non-centred).

    ``learning_rate`` may be a float or a schedule ``step -> rate`` (the step counts updates
    already applied, starting at 0, as TF's ``global_step`` does). Defaults are the paper's
    (section 8: decay 0.9, epsilon 1.0) with TF-slim's momentum 0.9.
    """

    def __init__(
        self,
        learning_rate: float | Callable[[mx.array], mx.array],
        decay: float = 0.9,
        momentum: float = 0.9,
        epsilon: float = 1.0,
    ):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"RMSProp decay must be in [0, 1), got {decay}")
        if momentum < 0.0:
            raise ValueError(f"RMSProp momentum must be >= 0, got {momentum}")
        if epsilon <= 0.0:
            raise ValueError(f"RMSProp epsilon must be > 0, got {epsilon}")
        self._maybe_schedule("learning_rate", learning_rate)
        self.decay = decay
        self.momentum = momentum
        self.epsilon = epsilon

    def init_single(self, parameter: mx.array, state: dict) -> None:
        # TF initialises the mean square ("rms" slot) to ones: the first steps are damped by
        # sqrt(1 + epsilon) instead of being divided by a tiny |g|.
        state["ms"] = mx.ones_like(parameter)
        state["mom"] = mx.zeros_like(parameter)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        lr = self.learning_rate.astype(gradient.dtype)
        ms = self.decay * state["ms"] + (1.0 - self.decay) * mx.square(gradient)
        mom = self.momentum * state["mom"] + lr * gradient * mx.rsqrt(ms + self.epsilon)
        state["ms"] = ms
        state["mom"] = mom
        return parameter - mom


def staircase_decay(
    initial: float, decay_rate: float, decay_steps: int
) -> Callable[[mx.array], mx.array]:
    """Return ``step -> initial * decay_rate ** floor(step / decay_steps)``.

    TF's ``exponential_decay(..., staircase=True)``: the paper's "0.045, decayed every two
    epochs using an exponential rate of 0.94" with ``decay_steps`` = two epochs of updates.
    """
    if decay_steps < 1:
        raise ValueError(f"decay_steps must be >= 1, got {decay_steps}")

    def schedule(step: mx.array) -> mx.array:
        periods = mx.floor(mx.array(step).astype(mx.float32) / decay_steps)
        return initial * mx.power(mx.array(decay_rate, mx.float32), periods)

    return schedule


def constant(rate: float) -> Callable[[mx.array], mx.array]:
    """Return a schedule that always gives ``rate`` (TF-slim's ``decay_type=fixed``)."""

    def schedule(step: mx.array) -> mx.array:
        return mx.array(rate, mx.float32)

    return schedule


def global_norm(tree) -> mx.array:
    """Return the L2 norm of all arrays of a tree taken together (float32)."""
    return mx.sqrt(
        tree_reduce(lambda total, g: total + mx.sum(mx.square(g.astype(mx.float32))), tree, 0.0)
    )


def clip_by_global_norm(tree, clip_norm: float):
    """Return ``(tree * clip_norm / max(norm, clip_norm), norm)``: TF's ``clip_by_global_norm``.

    Unlike ``mlx.optimizers.clip_grad_norm`` (which divides by ``norm + 1e-6``) gradients whose
    norm is at most ``clip_norm`` come back unchanged, bit for bit.
    """
    norm = global_norm(tree)
    scale = clip_norm / mx.maximum(norm, clip_norm)
    return tree_map(lambda g: (g * scale).astype(g.dtype), tree), norm
