"""The paper's variants as model options: low-resolution stems, BN-auxiliary, TF "SAME" pooling.

Parity is shown where PyTorch has the same computation: torchvision's own network with the first
layer's stride set to 1 (and its stem max-pool removed) for the stems; torchvision's InceptionAux
followed by torch's BatchNorm1d for BN-auxiliary; ``F.avg_pool2d(count_include_pad=False)`` and
pytorch-fid's FIDInceptionA/C/E blocks for ``pool_count_include_pad=False``.

Tolerance: as in test_model_parity, float32 sums in another order, so
``max|mlx - torch| <= 1e-4 * max|torch|`` (1e-3 in training mode, where BatchNorm divides by
the standard deviation of a batch of two and amplifies rounding).
"""

from __future__ import annotations

import json

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
import pytest
from conftest import TRAINING_TOLERANCE, assert_close, random_images, real_photos, to_nhwc
from mlx.utils import tree_flatten

import mlx_inception
from mlx_inception import InceptionV3, InceptionV3Config, tap_names
from mlx_inception.checkpoints import store
from mlx_inception.checkpoints.convert import convert_file
from mlx_inception.loading import build
from mlx_inception.model import InceptionA, InceptionAux, InceptionC, InceptionE
from mlx_inception.model.inception_v3 import minimum_input_size
from mlx_inception.model.layers import avg_pool_3x3_same

torch = pytest.importorskip("torch")

def nchw(images: np.ndarray):
    return torch.from_numpy(images.transpose(0, 3, 1, 2).copy())


def load_torch_state(module: nn.Module, state: dict, rename=None) -> None:
    """Load a torch state_dict into an MLX module: OIHW -> OHWI for convolutions, by role."""
    weights = []
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        key = rename(key) if rename else key
        if key is None:
            continue
        array = value.detach().numpy()
        if key.endswith("conv.weight"):
            array = array.transpose(0, 2, 3, 1)
        weights.append((key, mx.array(array)))
    module.load_weights(weights, strict=True)


def randomise_batchnorm(module, seed: int) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, as conftest does."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for child in module.modules():
            if isinstance(child, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = child.num_features
                child.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                child.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                child.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                child.bias.copy_(torch.randn(n, generator=generator) * 0.1)


# --- configuration ------------------------------------------------------------------------------


def test_variant_fields_round_trip_through_config_json():
    config = InceptionV3Config(
        num_classes=10, bn_aux=True, stem="79", pool_count_include_pad=False,
        mixed_7c_pool="max",
    )
    data = json.loads(json.dumps(config.to_dict()))
    assert {k: data[k] for k in ("bn_aux", "stem", "pool_count_include_pad", "mixed_7c_pool")} \
        == {"bn_aux": True, "stem": "79", "pool_count_include_pad": False, "mixed_7c_pool": "max"}
    assert InceptionV3Config.from_dict(data) == config


def test_stem_may_be_given_as_a_number():
    assert InceptionV3Config(stem=151).stem == "151"


def test_configs_saved_before_the_variants_existed_still_load():
    data = InceptionV3Config().to_dict()
    for key in ("bn_aux", "stem", "mixed_7c_pool"):
        del data[key]
    assert InceptionV3Config.from_dict(data) == InceptionV3Config()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("stem", "224", "unknown stem '224'"), ("mixed_7c_pool", "min", "unknown mixed_7c_pool")],
)
def test_unknown_variant_values_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        InceptionV3Config(**{field: value})


# --- low-resolution stems (section 9, Table 2) ----------------------------------------------------


def test_stems_keep_every_parameter_name_and_shape():
    def shapes(config):
        model = InceptionV3(config, init_weights=False)
        return {key: value.shape for key, value in tree_flatten(model.parameters())}

    default = shapes(InceptionV3Config())
    assert shapes(InceptionV3Config(stem="151")) == default
    assert shapes(InceptionV3Config(stem="79")) == default


@pytest.mark.parametrize(
    ("stem", "size", "expected"),
    [
        ("151", 151, {"Conv2d_1a_3x3": 149, "maxpool1": 73, "maxpool2": 35, "Mixed_6e": 17,
                      "Mixed_7c": 8}),
        ("79", 79, {"Conv2d_1a_3x3": 77, "Conv2d_2b_3x3": 75, "Conv2d_4a_3x3": 73,
                    "maxpool2": 36, "Mixed_6e": 17, "Mixed_7c": 8}),
    ],
)
def test_low_resolution_stem_reaches_the_grids_of_the_299_network(stem, size, expected):
    # 151 with stride 1 and the max-pool has the 299 network's grids from the first layer's
    # output on; 79 without the max-pool reaches 36 -> 17 -> 8, one more than 35 at first.
    model = InceptionV3(InceptionV3Config(stem=stem), init_weights=False)
    model.eval()
    _, taps = model.forward_with_taps(mx.zeros((1, size, size, 3)))
    for name, grid in expected.items():
        assert taps[name].shape[1:3] == (grid, grid), name
    assert set(taps) == set(tap_names(model.config))
    assert ("maxpool1" in taps) == (stem == "151")


@pytest.mark.parametrize(("stem", "size"), [("151", 151), ("79", 79)])
def test_low_resolution_stem_matches_torchvision_with_the_same_change(
    calibrated_model, calibrated_checkpoint, stem, size
):
    conversion = convert_file(calibrated_checkpoint)
    conversion.config.stem = stem
    model = build(conversion.weights, conversion.config)
    images = real_photos(size, 2)
    first_conv, maxpool1 = calibrated_model.Conv2d_1a_3x3.conv, calibrated_model.maxpool1
    first_conv.stride = (1, 1)
    if stem == "79":
        calibrated_model.maxpool1 = torch.nn.Identity()
    try:
        with torch.no_grad():
            expected = calibrated_model(nchw(images)).numpy()
    finally:
        first_conv.stride = (2, 2)
        calibrated_model.maxpool1 = maxpool1
    assert_close(model(mx.array(images)), expected)


@pytest.mark.parametrize(
    ("stem", "smallest", "smallest_with_aux"), [("299", 75, 299), ("151", 39, 151), ("79", 21, 77)]
)
def test_minimum_input_size_is_where_each_stem_stops_working(stem, smallest, smallest_with_aux):
    config = InceptionV3Config(stem=stem, aux_logits=False)
    assert minimum_input_size(config) == smallest
    assert minimum_input_size(config, aux=True) == smallest_with_aux
    model = InceptionV3(config, init_weights=False)
    model.eval()
    assert model(mx.zeros((1, smallest, smallest + 5, 3))).shape == (1, 1000)
    with pytest.raises(ValueError, match=f"needs at least {smallest}x{smallest}"):
        model(mx.zeros((1, smallest + 5, smallest - 1, 3)))


def test_aux_head_works_from_the_smallest_size_of_its_stem_and_not_below():
    # The 79 stem (cheapest to check): a 17x17 grid at Mixed_6e from 77 pixels.
    model = InceptionV3(InceptionV3Config(stem="79", num_classes=3), init_weights=False)
    model.eval()
    _, taps = model.forward_with_taps(mx.zeros((1, 77, 77, 3)))
    assert taps["Mixed_6e"].shape[1:3] == (17, 17) and taps["AuxLogits"].shape == (1, 3)
    _, taps = model.forward_with_taps(mx.zeros((1, 76, 76, 3)))
    assert taps["Mixed_6e"].shape[1:3] == (16, 16) and "AuxLogits" not in taps


# --- BN-auxiliary (section 10, Table 3) ---------------------------------------------------------


def test_bn_aux_normalises_the_aux_fc_output_and_drops_its_bias():
    keys = {k for k, _ in tree_flatten(InceptionV3(InceptionV3Config(bn_aux=True),
                                                   init_weights=False).parameters())}
    aux = sorted(k for k in keys if k.startswith("AuxLogits.fc"))
    assert aux == ["AuxLogits.fc.weight", "AuxLogits.fc_bn.bias", "AuxLogits.fc_bn.running_mean",
                   "AuxLogits.fc_bn.running_var", "AuxLogits.fc_bn.weight"]
    plain = {k for k, _ in tree_flatten(InceptionV3(init_weights=False).parameters())}
    assert keys - plain == {k for k in aux if "fc_bn" in k}
    assert plain - keys == {"AuxLogits.fc.bias"}


@pytest.fixture(scope="module")
def aux_pair():
    """torchvision's InceptionAux then torch's BatchNorm1d, and the same weights in MLX."""
    from torchvision.models.inception import InceptionAux as TorchInceptionAux

    torch.manual_seed(3)
    reference = torch.nn.Sequential(
        TorchInceptionAux(768, 10), torch.nn.BatchNorm1d(10, eps=1e-3, momentum=0.1)
    )
    randomise_batchnorm(reference, seed=4)
    with torch.no_grad():
        reference[0].fc.weight.normal_(0, 0.1)
        reference[0].fc.bias.zero_()  # BN-auxiliary's fc has no bias (BatchNorm cancels it)
    ours = InceptionAux(768, 10, batch_norm=True)

    def rename(key: str) -> str | None:
        if key == "0.fc.bias":
            return None
        return key.replace("0.", "", 1) if key.startswith("0.") else "fc_bn." + key[2:]

    load_torch_state(ours, reference.state_dict(), rename)
    return reference, ours


def test_bn_aux_head_matches_torch_in_eval_mode(aux_pair):
    reference, ours = aux_pair
    x = random_images((2, 17, 17, 768), seed=12)
    reference.eval()
    ours.eval()
    with torch.no_grad():
        expected = reference(nchw(x)).numpy()
    assert_close(ours(mx.array(x)), expected)


def test_bn_aux_head_matches_torch_in_training_mode_and_updates_statistics(aux_pair):
    reference, ours = aux_pair
    x = random_images((4, 17, 17, 768), seed=13)
    reference.train()
    ours.train()
    try:
        with torch.no_grad():
            expected = reference(nchw(x)).numpy()
        actual = ours(mx.array(x))
    finally:
        reference.eval()
        ours.eval()
    assert_close(actual, expected, "aux logits", TRAINING_TOLERANCE)
    # The batch's logits are normalised per class: mean beta, standard deviation gamma.
    gamma, beta = np.array(ours.fc_bn.weight), np.array(ours.fc_bn.bias)
    np.testing.assert_allclose(np.array(actual).mean(0), beta, atol=1e-4)
    np.testing.assert_allclose(np.array(actual).std(0), gamma, rtol=1e-2)
    assert_close(ours.fc_bn.running_var, reference[1].running_var.numpy(), "running_var",
                 TRAINING_TOLERANCE)
    assert_close(ours.fc_bn.running_mean, reference[1].running_mean.numpy(), "running_mean",
                 TRAINING_TOLERANCE)


def test_bn_aux_fc_is_drawn_like_the_other_normalised_layers():
    mx.random.seed(5)
    model = InceptionV3(InceptionV3Config(bn_aux=True))
    assert abs(float(np.array(model.AuxLogits.fc.weight).std()) - 0.1) < 0.005
    assert np.all(np.array(model.AuxLogits.fc_bn.weight) == 1)
    assert np.all(np.array(model.AuxLogits.fc_bn.bias) == 0)


# --- TensorFlow "SAME" average pooling ----------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (1, 2, 3, 4), (2, 5, 7, 3), (1, 8, 8, 2)])
def test_same_average_pool_matches_torch_without_padding_in_the_count(shape):
    x = random_images(shape, seed=14)
    expected = torch.nn.functional.avg_pool2d(
        nchw(x), kernel_size=3, stride=1, padding=1, count_include_pad=False
    )
    assert_close(avg_pool_3x3_same(mx.array(x), count_include_pad=False), to_nhwc(expected))


def _fid_block_pair(kind: str):
    fid_inception = pytest.importorskip("pytorch_fid.inception")
    torch.manual_seed(6)
    if kind == "A":
        reference, ours, shape = fid_inception.FIDInceptionA(192, 32), InceptionA(
            192, 32, pool_count_include_pad=False), (1, 9, 9, 192)
    elif kind == "C":
        reference, ours, shape = fid_inception.FIDInceptionC(768, 128), InceptionC(
            768, 128, pool_count_include_pad=False), (1, 7, 7, 768)
    elif kind == "E_1":
        reference, ours, shape = fid_inception.FIDInceptionE_1(1280), InceptionE(
            1280, pool_count_include_pad=False), (1, 5, 5, 1280)
    else:
        reference, ours, shape = fid_inception.FIDInceptionE_2(2048), InceptionE(
            2048, pool_count_include_pad=False, pool="max"), (1, 4, 4, 2048)
    randomise_batchnorm(reference, seed=7)
    load_torch_state(ours, reference.state_dict())
    return reference.eval(), ours, shape


@pytest.mark.parametrize("kind", ["A", "C", "E_1", "E_2"])
def test_same_pooling_blocks_match_pytorch_fids_fid_inception_blocks(kind):
    reference, ours, shape = _fid_block_pair(kind)
    ours.eval()
    # Inputs of a ReLU network are non-negative; the edges are where the pools differ.
    x = np.abs(random_images(shape, seed=15))
    with torch.no_grad():
        expected = reference(nchw(x))
    assert_close(ours(mx.array(x)), to_nhwc(expected), f"FIDInception{kind}")


def test_count_include_pad_changes_the_output_only_at_the_border():
    x = mx.array(np.abs(random_images((1, 6, 6, 2), seed=16)))
    tf_pool = np.array(avg_pool_3x3_same(x, count_include_pad=False))
    torch_pool = np.array(avg_pool_3x3_same(x, count_include_pad=True))
    np.testing.assert_allclose(tf_pool[:, 1:-1, 1:-1], torch_pool[:, 1:-1, 1:-1], rtol=1e-6)
    # A corner window holds 4 real pixels: TF divides by 4, torchvision by 9.
    np.testing.assert_allclose(tf_pool[:, 0, 0], torch_pool[:, 0, 0] * 9 / 4, rtol=1e-6)


# --- training every variant ---------------------------------------------------------------------


# Each stem costs about what the 299 network costs at its own size (that is the paper's point),
# so a step with the aux head (which needs the 17x17 grid) is as dear as one at 299: one such
# step, at the smallest size the 79 stem's aux head accepts (77), and the 151 stem without aux
# at a small input.
VARIANT_CONFIGS = {
    "stem79-bn_aux-same_pool": (
        dict(stem="79", bn_aux=True, pool_count_include_pad=False), 77,
        ("Conv2d_1a_3x3.conv.weight", "AuxLogits.fc.weight", "AuxLogits.fc_bn.weight"),
    ),
    "stem151-no_aux": (
        dict(stem="151", aux_logits=False), 63,
        ("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch_pool.conv.weight"),
    ),
}


@pytest.mark.parametrize("variant", list(VARIANT_CONFIGS))
def test_variant_trains_a_step(variant):
    options, size, learning = VARIANT_CONFIGS[variant]
    mx.random.seed(8)
    config = InceptionV3Config(num_classes=5, dropout=0.0, **options)
    model = InceptionV3(config)
    model.train()
    images = mx.array(random_images((2, size, size, 3), seed=17))
    labels = mx.array([1, 3])

    def loss_fn(m):
        output = m(images)
        if not config.aux_logits:
            return nn.losses.cross_entropy(output, labels, reduction="mean")
        logits, aux = output
        return (nn.losses.cross_entropy(logits, labels, reduction="mean")
                + 0.4 * nn.losses.cross_entropy(aux, labels, reduction="mean"))

    running_before = np.array(model.Conv2d_1a_3x3.bn.running_var)
    loss, grads = nn.value_and_grad(model, loss_fn)(model)
    flat = dict(tree_flatten(grads))
    assert all(np.all(np.isfinite(np.array(g))) for g in flat.values())
    # The parts the variant changes learn (the stride-1 first layer, the aux BatchNorm).
    for name in learning:
        assert float(mx.abs(flat[name]).max()) > 0, name
    optim.SGD(learning_rate=0.01).update(model, grads)
    mx.eval(model.parameters())
    assert not np.allclose(np.array(model.Conv2d_1a_3x3.bn.running_var), running_before)
    # One small gradient step on a fixed batch lowers that batch's loss.
    assert float(loss_fn(model)) < float(loss)


def test_variant_model_saves_and_loads_with_its_config(tmp_path):
    mx.random.seed(9)
    config = InceptionV3Config(num_classes=4, stem="79", bn_aux=True,
                               pool_count_include_pad=False, labels=None)
    model = InceptionV3(config)
    model.eval()
    store.save_model(model, tmp_path / "variant")
    loaded = mlx_inception.load(tmp_path / "variant")
    assert loaded.config == config
    x = mx.array(random_images((1, 39, 39, 3), seed=18))  # the 79 stem runs from 21 pixels
    # The loaded model computes with the CPU kernels (mlx_inception.kernels): float32 sums in
    # another order, within the parity tolerance.
    assert_close(loaded(x), model(x))
