"""Numbers a run reports that mean something: validation with BatchNorm statistics recomputed
for the evaluated weights (precise BN), a warning when initial weights' statistics do not fit
the images, training losses without the weight-decay penalty, the recipes' learning rates."""

from __future__ import annotations

import math
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from test_training_data import make_digits_folder

from mlx_inception import InceptionV3, InceptionV3Config
from mlx_inception.checkpoints.store import model_weights
from mlx_inception.data.loader import BatchLoader
from mlx_inception.training.distributed import init_group
from mlx_inception.training.evaluation import (
    initial_statistics_warning,
    precise_statistics,
    recompute_batchnorm_statistics,
    weight_decay_penalty,
)
from mlx_inception.training.network import is_decayed
from mlx_inception.training.optim import TFRMSProp
from mlx_inception.training.recipe import ConfigError, resolve
from mlx_inception.training.step import KeyedDropout, dropout_keys, make_train_step
from mlx_inception.training.trainer import Trainer


def image_loader(images: np.ndarray, batch_size: int) -> BatchLoader:
    """A loader over in-memory images (label 0), in order, whole batches only."""
    samples = [(Path(str(i)), 0) for i in range(len(images))]
    return BatchLoader(samples, lambda path, label, seed: images[int(path.name)], batch_size,
                       shuffle=False, drop_last=True, workers=1, prefetch=1)


def small_network(seed: int = 0) -> InceptionV3:
    mx.random.seed(seed)
    return InceptionV3(InceptionV3Config(num_classes=3, aux_logits=False, labels=None))


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((4, 75, 75, 3)).astype(np.float32)


def test_precise_statistics_are_the_mean_of_each_batchs_statistics(images):
    model = small_network().train()
    model.Mixed_7c.eval()  # as a frozen module is: it keeps its statistics
    before = np.array(model.Mixed_7c.branch1x1.bn.running_mean)
    recompute_batchnorm_statistics(model, image_loader(images, 2), init_group())
    means, variances = [], []
    for batch in (images[:2], images[2:]):
        out = np.array(model.Conv2d_1a_3x3.conv(mx.array(batch))).reshape(-1, 32)
        means.append(out.mean(0))
        variances.append(out.var(0, ddof=1))  # PyTorch's running_var is unbiased
    bn = model.Conv2d_1a_3x3.bn
    # float32 sums over 2 x 37 x 37 positions in another order: 1e-5 relative.
    np.testing.assert_allclose(np.array(bn.running_mean), np.mean(means, 0), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(np.array(bn.running_var), np.mean(variances, 0), rtol=1e-5)
    assert bn.momentum == pytest.approx(0.1)  # put back
    assert np.array_equal(np.array(model.Mixed_7c.branch1x1.bn.running_mean), before)


@pytest.mark.slow
def test_precise_statistics_leave_the_model_in_evaluation_mode_with_frozen_ones_kept(images):
    model = small_network()
    kept = np.array(model.Conv2d_1a_3x3.bn.running_var)
    statistics = precise_statistics(model, ["Conv2d_1a_3x3"], image_loader(images, 2),
                                    init_group())
    assert not model.training
    assert np.array_equal(np.array(statistics["Conv2d_1a_3x3.bn.running_var"]), kept)
    assert not np.allclose(np.array(statistics["Conv2d_2a_3x3.bn.running_var"]), 1.0)


@pytest.mark.slow
def test_initial_weights_with_statistics_that_do_not_fit_are_warned_about(images):
    stale = small_network()  # a random network's statistics (0 and 1): activations explode
    warning = initial_statistics_warning(stale, image_loader(images, 4))
    assert warning and "statistics do not fit" in warning and "\n" not in warning
    fitted = small_network()
    fitted.train()
    recompute_batchnorm_statistics(fitted, image_loader(images, 4), init_group())
    assert initial_statistics_warning(fitted.eval(), image_loader(images, 4)) is None


def test_the_reported_loss_leaves_the_weight_decay_penalty_out(images):
    config, _ = resolve({"data": "d", "out": "o", "image_size": 75, "batch_size": 2})
    start = model_weights(small_network())
    losses = []
    for weight_decay in (0.0, 0.5):
        model = small_network()
        model.load_weights(list(start.items()))
        model.dropout = KeyedDropout(model.config.dropout)
        model.train()
        optimizer = TFRMSProp(0.01)
        optimizer.init(model.trainable_parameters())
        config.weight_decay = weight_decay
        step = make_train_step(model, optimizer, {}, config, init_group())
        loss, _, _ = step(mx.array(images[None, :2]), mx.array([[0, 1]]),
                          dropout_keys(0, 0, 0, 1))
        losses.append(loss.item())
    assert losses[0] == losses[1]  # the step's loss is the classification loss alone
    penalty = weight_decay_penalty(start, 0.5)
    expected = 0.25 * sum(float(np.sum(np.square(np.array(v))))
                          for k, v in start.items() if is_decayed(k))
    # float32 sums over 22M squares against float64: 1e-3 relative.
    assert penalty == pytest.approx(expected, rel=1e-3) and penalty > 1.0


def test_the_paper_recipe_is_refused_with_initial_weights():
    with pytest.raises(ConfigError, match="--recipe paper trains from scratch"):
        resolve({"data": "d", "out": "o", "recipe": "paper", "init": "w"})
    with pytest.raises(ConfigError, match="--recipe must be one of"):
        resolve({"data": "d", "out": "o", "recipe": "fast"})


@pytest.mark.slow
def test_validation_after_one_epoch_is_of_the_order_of_chance_not_1e7(module_tmp):
    # From scratch with the paper's BatchNorm momentum (0.0003): after 3 steps the running
    # statistics are still the initial ones. The recomputed ones describe the weights.
    data = make_digits_folder(module_tmp("digits"), 4, 3, 2)
    results = {}
    for images in (12, 0):
        config, notes = resolve(dict(
            data=str(data / "train"), val=str(data / "val"), out=str(module_tmp(f"run{images}")),
            image_size=75, batch_size=4, epochs=1, workers=2, precise_bn_images=images))
        results[images] = Trainer(config, notes=notes, show_progress=False).fit()["last_metrics"]
    # Of the order of the training loss (torchvision's init gives large logits: about 6 at the
    # first steps, where chance is ln 4 = 1.4), not of the order of 1e7.
    recomputed, running = results[12], results[0]
    assert recomputed["val_loss"] < 2 * recomputed["train_loss"], recomputed
    assert recomputed["val_loss"] < 10 * math.log(4), recomputed
    assert running["val_loss"] > 1e3, running  # the running statistics
    assert recomputed["weight_decay_penalty"] > 0
