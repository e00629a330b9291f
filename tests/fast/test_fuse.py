"""The inference fast path computes what the plain model computes.

``fold_batchnorm``, ``fuse_parallel_convolutions`` and ``optimize_for_inference`` reorder
float32 arithmetic (BatchNorm scale multiplied into the weights, the pool branch's 1x1
convolution computed before its average pool, 1x1 convolutions as matmuls) and nothing else.
Every network here has BatchNorm statistics measured on real photos, so activations have a
trained network's scale (with arbitrary statistics the logits of a random network reach 1e10 and
rounding differences with them). Tolerance, as in the torchvision parity tests:
max|fast - plain| <= 1e-4 * max|plain|, far above the float32 reordering (about 1e-6) and far
below a real mistake: adding the pool branch's bias before its pool instead of after shifts
border pixels by a third of the bias (about 1e-1 relative).
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import random_images, real_photos

import mlx_inception
from mlx_inception.fast import (
    FastInceptionV3,
    fold_batchnorm,
    fuse_parallel_convolutions,
    module_tree_copy,
    optimize_for_inference,
)
from mlx_inception.fast.fuse import FusedPointwise, PointwiseConv2d
from mlx_inception.model import BatchNorm, InceptionV3, InceptionV3Config, MaxPool2d

RELATIVE_TOLERANCE = 1e-4


def relative_error(actual: mx.array, expected: mx.array) -> float:
    actual = np.asarray(actual.astype(mx.float32), dtype=np.float64)
    expected = np.asarray(expected.astype(mx.float32), dtype=np.float64)
    assert actual.shape == expected.shape
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def make_model(seed: int = 0, **config) -> InceptionV3:
    """A random network whose BatchNorm statistics are those of four real photos, and whose
    BatchNorm scales and shifts are drawn near 1 and 0, so that folding has all four to fold."""
    mx.random.seed(seed)
    model = InceptionV3(InceptionV3Config(**config))
    for _, child in model.named_modules():
        if isinstance(child, BatchNorm):
            n = child.weight.shape[0]
            child.weight = mx.random.uniform(0.75, 1.25, (n,))
            child.bias = mx.random.normal((n,)) * 0.1
            child.momentum = 1.0  # the running statistics become this batch's
    model.train()
    model.features(mx.array(real_photos(107, 4)))  # the aux head's grid needs 299 px: skipped
    model.eval()
    mx.eval(model.parameters())
    return model


def plain_and_fast(seed: int = 0, **config) -> tuple[InceptionV3, InceptionV3]:
    """The same weights twice: as built, and through optimize_for_inference."""
    plain = make_model(seed, **config)
    fast = make_model(seed, **config)
    return plain, optimize_for_inference(fast)


@pytest.fixture(scope="module")
def models() -> tuple[InceptionV3, InceptionV3]:
    return plain_and_fast()


def test_fast_path_gives_the_plain_logits_on_real_photos_at_299(models):
    plain, fast = models
    photos = mx.array(real_photos(299, 2))
    assert relative_error(fast(photos), plain(photos)) <= RELATIVE_TOLERANCE


def test_fast_path_gives_every_tap_of_the_plain_model(models):
    plain, fast = models
    images = mx.array(random_images((2, 107, 107, 3), seed=4))
    _, plain_taps = plain.forward_with_taps(images)
    _, fast_taps = fast.forward_with_taps(images)
    assert list(fast_taps) == list(plain_taps)
    for key, value in plain_taps.items():
        assert relative_error(fast_taps[key], value) <= RELATIVE_TOLERANCE, key


def test_branch_taps_of_fused_blocks_still_concatenate_to_the_block_output(models):
    _, fast = models
    _, taps = fast.forward_with_taps(mx.array(random_images((1, 107, 107, 3), seed=5)))
    for block in ("Mixed_5b", "Mixed_6a", "Mixed_6e", "Mixed_7a", "Mixed_7c"):
        branches = [value for key, value in taps.items() if key.startswith(block + ".")]
        np.testing.assert_array_equal(np.array(mx.concatenate(branches, axis=-1)),
                                      np.array(taps[block]))


def test_replacing_a_branch_gives_the_plain_model_output_and_gradient(models):
    plain, fast = models
    images = mx.array(random_images((1, 107, 107, 3), seed=6))
    key = "Mixed_6e.branch7x7dbl"
    _, taps = plain.forward_with_taps(images)

    def class_score(model, activation):
        logits, _ = model.forward_with_taps(images, replace={key: activation})
        return logits[0, 3]

    plain_score, plain_grad = mx.value_and_grad(lambda a: class_score(plain, a))(taps[key])
    fast_score, fast_grad = mx.value_and_grad(lambda a: class_score(fast, a))(taps[key])
    assert relative_error(fast_score, plain_score) <= RELATIVE_TOLERANCE
    assert relative_error(fast_grad, plain_grad) <= RELATIVE_TOLERANCE


@pytest.mark.parametrize("config", [
    {"pool_count_include_pad": False},  # TensorFlow's "SAME" average pooling
    {"transform_input": True, "aux_logits": False, "num_classes": 10},
])
def test_fast_path_matches_the_plain_model_for_other_configurations(config):
    plain, fast = plain_and_fast(seed=3, **config)
    images = mx.array(random_images((2, 107, 107, 3), seed=7))
    assert relative_error(fast(images), plain(images)) <= RELATIVE_TOLERANCE


def test_max_pooling_inception_e_keeps_its_pool_branch_apart():
    # pytorch-fid's Mixed_7c max-pools: a max pool does not commute with the convolution.
    plain, fast = plain_and_fast(seed=17, stem="79", mixed_7c_pool="max", aux_logits=False)
    assert fast.Mixed_7b.pointwise.weight.shape == (320 + 384 + 448 + 192, 1280)
    assert fast.Mixed_7c.pointwise.weight.shape == (320 + 384 + 448, 2048)
    assert isinstance(fast.Mixed_7c.pool, MaxPool2d)
    images = mx.array(real_photos(79, 2))
    assert relative_error(fast(images), plain(images)) <= RELATIVE_TOLERANCE


def test_each_inception_block_computes_its_input_1x1_convolutions_in_one_matmul(models):
    _, fast = models
    # Widths: branch1x1 + reductions + pool branch (Mixed_5b: 64 + 48 + 64 + 32).
    assert isinstance(fast.Mixed_5b.pointwise, FusedPointwise)
    assert fast.Mixed_5b.pointwise.weight.shape == (208, 192)
    assert fast.Mixed_6e.pointwise.weight.shape == (192 * 4, 768)
    assert fast.Mixed_7a.pointwise.weight.shape == (384, 768)
    assert fast.Mixed_7c.pointwise.weight.shape == (320 + 384 + 448 + 192, 2048)
    # The remaining 1x1 convolutions are matmuls too.
    assert isinstance(fast.Conv2d_3b_1x1.conv, PointwiseConv2d)
    assert isinstance(fast.Mixed_6a.branch3x3dbl_1.conv, PointwiseConv2d)
    assert isinstance(fast.AuxLogits.conv0.conv, PointwiseConv2d)
    assert not any(isinstance(m, BatchNorm) for _, m in fast.named_modules())


def test_fusion_refuses_unfolded_batchnorm():
    with pytest.raises(ValueError, match="fold_batchnorm"):
        fuse_parallel_convolutions(make_model())


def test_optimizing_twice_changes_nothing(models):
    _, fast = models
    images = mx.array(random_images((1, 75, 75, 3), seed=10))
    before = fast(images)
    again = optimize_for_inference(fast)
    assert again is fast and isinstance(fast, FastInceptionV3)
    np.testing.assert_array_equal(np.array(fast(images)), np.array(before))


@pytest.mark.slow
def test_compiled_forward_gives_the_plain_logits(models):
    # The GPU path (mx.compile), run here on the CPU.
    plain, fast = models
    images = mx.array(random_images((2, 75, 75, 3), seed=15))
    assert relative_error(fast.compiled_forward(images), plain(images)) <= RELATIVE_TOLERANCE


@pytest.mark.slow
def test_compiled_features_give_the_plain_features(models):
    # FID's pool3 and pytorch-fid's smaller blocks on the GPU path (mx.compile), run on the CPU.
    plain, fast = models
    images = mx.array(random_images((2, 75, 75, 3), seed=16))
    for layer in ("maxpool1", "Mixed_6e", "avgpool"):
        expected = plain.features(images, layer)
        actual = fast.compiled_features(images, layer)
        assert actual.shape == expected.shape
        assert relative_error(actual, expected) <= RELATIVE_TOLERANCE


@pytest.mark.slow
def test_compiled_forward_sees_later_weight_changes():
    _, fast = plain_and_fast(seed=11, aux_logits=False, num_classes=10)
    images = mx.array(random_images((1, 75, 75, 3), seed=12))
    mx.eval(fast.compiled_forward(images))  # traced and compiled here
    bias = mx.arange(10, dtype=mx.float32)
    fast.update({"fc": {"weight": mx.zeros_like(fast.fc.weight), "bias": bias}})
    np.testing.assert_array_equal(np.array(fast.compiled_forward(images)), np.array(bias)[None])


def test_too_small_an_input_gets_the_plain_model_error(models):
    _, fast = models
    with pytest.raises(ValueError, match="too small"):
        fast(mx.zeros((1, 60, 60, 3)))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_fast_path_in_half_precision_is_as_close_to_float32_as_the_plain_half_model(dtype):
    # Real photos; the model cast as mlx_inception.load(dtype=...) casts it (BatchNorm folded in
    # float32 first). A random network passes rounding errors on undamped, so each Inception
    # block's output is compared, not only the logits. Measured relative error to float32,
    # plain and fast alike: float16 4e-3 at Mixed_5b growing to about 0.2 at the logits;
    # bfloat16 3e-2 growing to about 0.8. The worst fast / plain ratio seen was 1.3 (Mixed_7c).
    # Asserted for every block and the logits: fast within 2x plain.
    dtype = getattr(mx, dtype)
    photos = mx.array(real_photos(107, 2))
    _, expected = make_model(seed=13, aux_logits=False).forward_with_taps(photos)
    plain = fold_batchnorm(make_model(seed=13, aux_logits=False))
    plain.set_dtype(dtype)
    fast = optimize_for_inference(fold_batchnorm(make_model(seed=13, aux_logits=False)))
    fast.set_dtype(dtype)
    _, plain_taps = plain.forward_with_taps(photos.astype(dtype))
    logits, fast_taps = fast.forward_with_taps(photos.astype(dtype))
    assert logits.dtype == dtype
    for key in [k for k in expected if k.startswith("Mixed_") and "." not in k] + ["fc"]:
        plain_error = relative_error(plain_taps[key], expected[key])
        fast_error = relative_error(fast_taps[key], expected[key])
        assert fast_error <= 2 * plain_error, (key, fast_error, plain_error)


@pytest.mark.slow
def test_load_then_optimize_matches_torchvision(reference_model, reference_checkpoints):
    torch = pytest.importorskip("torch")
    fast = optimize_for_inference(mlx_inception.load(reference_checkpoints["safetensors"]))
    images = random_images((1, 299, 299, 3), seed=14)
    with torch.no_grad():
        expected = reference_model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    assert relative_error(fast(mx.array(images)), mx.array(expected.numpy())) <= 1e-4



def test_folding_the_bn_auxiliary_head_keeps_its_logits_and_leaves_no_batchnorm():
    # Table 3's "BN-auxiliary": a BatchNorm after the aux classifier's fc. In eval mode the head
    # runs only in forward_with_taps, on a 17x17 grid (77 px with the "79" stem). Every
    # BatchNorm's statistics are measured on real photos, so fc_bn's mean and variance are those
    # of fc's output; its weight and bias are then drawn away from 1 and 0. On two of those
    # photos, dropping fc_bn is off by 1.2 relative, dropping its mean, its beta or its scale
    # each by more than 0.5. Both models get the plain model's Mixed_6e activation, so only the
    # head's folding is compared. Folding reorders float32 products; the fc output is about its
    # running mean, which then cancels: measured 3e-6 relative, asserted 1e-5.
    config = InceptionV3Config(stem="79", bn_aux=True, num_classes=10)
    mx.random.seed(19)
    plain = InceptionV3(config)
    for _, child in plain.named_modules():
        if isinstance(child, BatchNorm):
            child.momentum = 1.0  # the running statistics become this batch's
    photos = mx.array(real_photos(77, 4))
    plain.train()
    plain(photos)
    plain.eval()
    bn = plain.AuxLogits.fc_bn
    bn.weight = mx.random.uniform(0.5, 2.0, (10,))
    bn.bias = mx.random.normal((10,))
    folded = InceptionV3(config, init_weights=False)
    folded.update(plain.parameters())
    folded.eval()
    _, expected = plain.forward_with_taps(photos[:2])
    fold_batchnorm(folded)
    assert not any(isinstance(m, nn.BatchNorm) for _, m in folded.named_modules())
    assert "fc_bn" not in folded.AuxLogits and "bias" in folded.AuxLogits.fc
    _, taps = folded.forward_with_taps(photos[:2], replace={"Mixed_6e": expected["Mixed_6e"]})
    assert relative_error(taps["AuxLogits"], expected["AuxLogits"]) <= 1e-5


def test_a_copy_of_a_fast_model_computes_with_its_own_weights(models):
    _, fast = models
    copy = module_tree_copy(fast)
    images = mx.array(random_images((1, 75, 75, 3), seed=20))
    before = np.array(fast(images))
    copy.Mixed_5b.pointwise.weight = mx.zeros_like(copy.Mixed_5b.pointwise.weight)
    assert np.abs(np.array(copy(images)) - before).max() > 0  # the copy sees its change
    np.testing.assert_array_equal(np.array(fast(images)), before)  # the original does not


def test_a_fused_block_never_reuses_a_product_of_other_weights():
    # A branch called on its own leaves the block's shared product half taken; new weights (as
    # set_dtype or update give) and the same input object must still give a fresh result.
    _, fast = plain_and_fast(seed=21, aux_logits=False)
    block = fast.Mixed_5b
    x = mx.random.normal((1, 35, 35, 192), key=mx.random.key(22))
    block.branch1x1(x)
    block.pointwise.weight = block.pointwise.weight * 2
    expected = module_tree_copy(block)(x)
    np.testing.assert_array_equal(np.array(block(x)), np.array(expected))
