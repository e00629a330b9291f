"""One optimizer step, as plain functions: the loss, the dropout keys, the moving average.

``make_train_step`` returns the step the loop calls (and may ``mx.compile``)::

    for each micro-batch: forward in training mode (BatchNorm uses the batch's statistics,
        dropout draws from the micro-batch's key), loss = smoothed cross-entropy + 0.4 x the
        aux head's, gradients
    average gradients and BatchNorm statistics over micro-batches and processes
    add weight decay, clip by global norm, apply TF's RMSProp
    update the moving average of the weights and BatchNorm statistics (as
        ``inception_distributed_train.py`` does), which evaluation uses

Randomness is counter-based: the dropout key of step ``n``'s share ``s`` of the global batch
comes from (seed, n, s), so a checkpoint needs only the seed and the step to restore it, and a
data-parallel run draws the same masks as one process holding the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from ..model import InceptionV3
from .distributed import average_tree
from .network import is_decayed, is_statistic
from .optim import TFRMSProp, clip_by_global_norm, constant, global_norm, staircase_decay
from .recipe import TrainConfig

# (images, labels, dropout keys) -> (loss, correct predictions, gradient norm)
TrainStep = Callable[[mx.array, mx.array, mx.array], tuple[mx.array, mx.array, mx.array]]


def smoothed_cross_entropy(logits: mx.array, labels: mx.array, smoothing: float) -> mx.array:
    """Return the mean cross-entropy against (1 - eps) * one_hot + eps / K (paper, section 7)."""
    return nn.losses.cross_entropy(
        logits.astype(mx.float32), labels, label_smoothing=smoothing, reduction="mean"
    )


class _Key:
    """Holds the key of the next dropout draw (a plain attribute, so not a model parameter)."""

    value: mx.array | None = None


class KeyedDropout(nn.Dropout):
    """``nn.Dropout`` that draws its mask from a key set before each forward pass.

    The masks are then a function of (seed, step, share of the batch) instead of a global
    random state, which makes micro-batches on one process and shares on several processes
    draw identical masks.
    """

    def __init__(self, p: float):
        super().__init__(p)
        self.next_key = _Key()

    def __call__(self, x: mx.array) -> mx.array:
        if not self.training or self._p_1 == 1 or self.next_key.value is None:
            return super().__call__(x)
        keep = mx.random.bernoulli(self._p_1, x.shape, key=self.next_key.value)
        return (keep * x) * (1 / self._p_1)


def dropout_keys(seed: int, step: int, rank: int, micro_batches: int) -> mx.array:
    """Return a key per micro-batch of process ``rank`` from (seed, step, share of the batch),
    shares numbered across processes so that the layout of the batch does not matter."""
    keys = []
    for share in range(rank * micro_batches, (rank + 1) * micro_batches):
        sequence = np.random.SeedSequence([seed, 3, step, share])
        keys.append(mx.random.key(int(sequence.generate_state(1, np.uint32)[0])))
    return mx.stack(keys)


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int) -> Callable:
    """Return ``step -> learning rate``: staircase decay every ``lr_decay_epochs`` (paper,
    section 8), or constant when that is 0."""
    if config.lr_decay_epochs > 0:
        decay_steps = max(1, int(steps_per_epoch * config.lr_decay_epochs))
        return staircase_decay(config.learning_rate, config.lr_decay_rate, decay_steps)
    return constant(config.learning_rate)


def ema_decay_at(decay: float, updates: mx.array) -> mx.array:
    """Return TF's ``ExponentialMovingAverage`` decay with ``num_updates``:
    min(decay, (1 + n) / (10 + n)), so early averages are not dominated by the initial weights."""
    n = updates.astype(mx.float32)
    return mx.minimum(mx.array(decay, mx.float32), (1.0 + n) / (10.0 + n))


def averaged_part(model: nn.Module, weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Return the entries of ``weights`` the moving average covers: what training changes
    (trainable weights and BatchNorm statistics)."""
    trainable = {k for k, _ in tree_flatten(model.trainable_parameters())}
    return {k: v for k, v in weights.items() if k in trainable or is_statistic(k)}


def update_moving_average(
    average: dict[str, mx.array], weights: dict[str, mx.array], decay: mx.array
) -> None:
    """Move each entry of ``average`` towards ``weights`` (in place), TF's form:
    average -= (1 - decay) * (average - value), exact for constants."""
    for key, value in average.items():
        average[key] = value - (1.0 - decay) * (value - weights[key])


def make_train_step(
    model: InceptionV3,
    optimizer: TFRMSProp,
    average: dict[str, mx.array],
    config: TrainConfig,
    group: mx.distributed.Group,
) -> TrainStep:
    """Return the training step on (micro_batches, b, H, W, 3) images, a dropout key per
    micro-batch, which updates ``model``, ``optimizer`` and ``average`` in place.

    Its state (for ``mx.compile``) is ``model.state``, ``optimizer.state``, ``mx.random.state``
    and ``average``.
    """
    compute_dtype = mx.bfloat16 if config.dtype == "bfloat16" else mx.float32

    def loss_fn(params, masters, x, y):
        # Each micro-batch starts from the step's statistics, as each replica would; in bfloat16
        # the weights are cast for the forward pass, their gradients flow back to the float32
        # masters through the cast.
        weights = {**masters, **dict(tree_flatten(params))}
        if compute_dtype != mx.float32:
            weights = {k: v if is_statistic(k) else v.astype(compute_dtype)
                       for k, v in weights.items()}
            x = x.astype(compute_dtype)
        model.update(tree_unflatten(list(weights.items())))
        output = model(x)
        logits, aux = output if isinstance(output, tuple) else (output, None)
        loss = smoothed_cross_entropy(logits, y, config.label_smoothing)
        if aux is not None:
            loss = loss + config.aux_weight * smoothed_cross_entropy(aux, y, config.label_smoothing)
        return loss, logits

    loss_and_grad = mx.value_and_grad(loss_fn)

    def step(images: mx.array, labels: mx.array, keys: mx.array):
        masters = dict(tree_flatten(model.parameters()))  # float32 weights + statistics
        trainable = model.trainable_parameters()
        loss, correct, grads, statistics = 0.0, 0, None, None
        for i in range(images.shape[0]):
            model.dropout.next_key.value = keys[i]
            (batch_loss, logits), g = loss_and_grad(trainable, masters, images[i], labels[i])
            stats = {k: v for k, v in tree_flatten(model.parameters()) if is_statistic(k)}
            loss = loss + batch_loss
            correct = correct + mx.sum(mx.argmax(logits, axis=-1) == labels[i])
            grads = g if grads is None else tree_map(mx.add, grads, g)
            statistics = stats if statistics is None else tree_map(mx.add, statistics, stats)
        count = images.shape[0]
        if count > 1:
            grads = tree_map(lambda a: a * (1.0 / count), grads)
            statistics = tree_map(lambda a: a * (1.0 / count), statistics)
        loss = loss / count
        if group.size() > 1:
            grads = average_tree(grads, group)
            statistics = dict(tree_flatten(
                average_tree(tree_unflatten(list(statistics.items())), group)
            ))
            loss = mx.distributed.all_sum(loss, group=group) / group.size()
            correct = mx.distributed.all_sum(correct, group=group)

        flat_grads = dict(tree_flatten(grads))
        if config.weight_decay > 0:
            # d/dw of (wd / 2) * |w|^2, TF's l2_regularizer, added before clipping as the
            # regularisation loss is part of TF-slim's total loss.
            for key, gradient in flat_grads.items():
                if is_decayed(key):
                    flat_grads[key] = gradient + config.weight_decay * masters[key]
        grads = tree_unflatten(list(flat_grads.items()))
        if config.clip_norm > 0:
            grads, norm = clip_by_global_norm(grads, config.clip_norm)
        else:  # still measured: an inf or NaN gradient must stop the run before any save
            norm = global_norm(grads)
        updates = optimizer.apply_gradients(
            grads, tree_unflatten([(k, masters[k]) for k in flat_grads])
        )
        masters.update(tree_flatten(updates))
        masters.update(statistics)
        model.update(tree_unflatten(list(masters.items())))
        if average:
            decay = ema_decay_at(config.ema_decay, optimizer.step - 1)
            update_moving_average(average, masters, decay)
        return loss, correct, norm

    return step
