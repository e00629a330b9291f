"""The network's structure: sizes, parameter counts, init, taps and the aux head's limits."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_inception import InceptionV3, InceptionV3Config, tap_names


def parameter_count(model: InceptionV3) -> int:
    return sum(v.size for k, v in tree_flatten(model.trainable_parameters()))


def test_parameter_counts_are_torchvisions():
    # torchvision: 27,161,264 with the aux head, 23,834,568 without (BN statistics excluded).
    assert parameter_count(InceptionV3(init_weights=False)) == 27_161_264
    no_aux = InceptionV3(InceptionV3Config(aux_logits=False), init_weights=False)
    assert parameter_count(no_aux) == 23_834_568


def test_state_dict_keys_are_torchvisions(reference_model):
    ours = {k for k, _ in tree_flatten(InceptionV3(init_weights=False).parameters())}
    theirs = {k for k in reference_model.state_dict() if not k.endswith("num_batches_tracked")}
    assert ours == theirs


def test_spatial_sizes_follow_the_paper_at_299():
    model = InceptionV3(InceptionV3Config(aux_logits=False), init_weights=False)
    model.eval()
    _, taps = model.forward_with_taps(mx.zeros((1, 299, 299, 3)))
    expected = {
        "Conv2d_1a_3x3": (149, 32), "Conv2d_2a_3x3": (147, 32), "Conv2d_2b_3x3": (147, 64),
        "maxpool1": (73, 64), "Conv2d_3b_1x1": (73, 80), "Conv2d_4a_3x3": (71, 192),
        "maxpool2": (35, 192), "Mixed_5b": (35, 256), "Mixed_5c": (35, 288),
        "Mixed_5d": (35, 288), "Mixed_6a": (17, 768), "Mixed_6e": (17, 768),
        "Mixed_7a": (8, 1280), "Mixed_7b": (8, 2048), "Mixed_7c": (8, 2048),
    }
    for name, (size, channels) in expected.items():
        assert taps[name].shape == (1, size, size, channels), name
    assert taps["avgpool"].shape == (1, 2048)
    assert taps["Mixed_6a.branch_pool"].shape == (1, 17, 17, 288)


def test_tap_names_lists_every_key_that_a_forward_records():
    model = InceptionV3(init_weights=False)
    model.eval()
    _, taps = model.forward_with_taps(mx.zeros((1, 299, 299, 3)))
    assert set(taps) == set(tap_names(model.config))
    assert len(tap_names()) == 7 + 11 + 42 + 1 + 2  # stem, modules, branches, aux, avgpool, fc


def test_init_weights_draws_torchvisions_distributions():
    mx.random.seed(0)
    model = InceptionV3()
    conv = np.array(model.Mixed_6b.branch7x7_2.conv.weight)
    assert abs(conv.std() - 0.1) < 0.005 and abs(conv.mean()) < 0.005
    aux_fc = np.array(model.AuxLogits.fc.weight)
    assert abs(aux_fc.std() - 0.001) < 0.0001
    assert np.all(np.array(model.Conv2d_1a_3x3.bn.weight) == 1)
    assert np.all(np.array(model.Conv2d_1a_3x3.bn.bias) == 0)


def test_init_weights_matches_torchvisions_statistics(reference_model):
    mx.random.seed(1)
    ours = dict(tree_flatten(InceptionV3().parameters()))
    theirs = reference_model.state_dict()
    # Same distribution, different generator: compare moments with a tolerance of a few
    # standard errors for tensors of >= 10k values.
    for key in ("Conv2d_2b_3x3.conv.weight", "Mixed_7c.branch3x3dbl_2.conv.weight",
                "AuxLogits.conv1.conv.weight", "fc.weight", "AuxLogits.fc.weight"):
        a = np.array(ours[key])
        b = theirs[key].numpy()
        assert abs(a.std() - b.std()) < 0.02 * b.std(), key


def test_eval_mode_returns_logits_and_training_mode_returns_aux_too():
    model = InceptionV3(InceptionV3Config(num_classes=7), init_weights=False)
    x = mx.random.normal((2, 299, 299, 3))
    logits, aux = model(x)
    assert logits.shape == (2, 7) and aux.shape == (2, 7)
    model.eval()
    assert model(x).shape == (2, 7)


def test_aux_head_refuses_inputs_below_299_in_training_mode():
    model = InceptionV3(init_weights=False)
    with pytest.raises(ValueError, match="17x17 grid"):
        model(mx.zeros((1, 298, 298, 3)))


def test_without_aux_head_training_works_at_the_75_pixel_minimum():
    model = InceptionV3(InceptionV3Config(aux_logits=False, num_classes=3), init_weights=False)
    assert model(mx.zeros((2, 75, 75, 3))).shape == (2, 3)


def test_replace_substitutes_an_activation_and_gradients_flow_to_it():
    model = InceptionV3(InceptionV3Config(aux_logits=False), init_weights=True)
    model.eval()
    x = mx.random.normal((1, 107, 107, 3))
    _, taps = model.forward_with_taps(x)
    branch = taps["Mixed_7c.branch3x3dbl"]

    def score(activation):
        logits, _ = model.forward_with_taps(x, replace={"Mixed_7c.branch3x3dbl": activation})
        return logits[0, 5]

    value, grad = mx.value_and_grad(score)(branch)
    np.testing.assert_allclose(np.array(value), np.array(model(x)[0, 5]), rtol=1e-6)
    assert grad.shape == branch.shape and float(mx.abs(grad).sum()) > 0
    zeroed, _ = model.forward_with_taps(x, replace={"Mixed_7c": mx.zeros_like(taps["Mixed_7c"])})
    np.testing.assert_allclose(np.array(zeroed), np.array(model.fc.bias)[None], atol=1e-6)


def test_config_round_trips_through_a_dict():
    config = InceptionV3Config(num_classes=10, aux_logits=False, labels=["a"] * 10,
                               source={"file": "x.pth"})
    assert InceptionV3Config.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown config fields: colour"):
        InceptionV3Config.from_dict({"colour": "red"})
