"""Grad-CAM at modules and single branches: the analytic CAM case and torchvision's autograd."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import real_photos, torch_grad_cam

import mlx_inception
from mlx_inception import InceptionV3
from mlx_inception.inference.gradcam import grad_cam, grad_cams, spatial_layers


@pytest.fixture(scope="module")
def model(untrained_model):
    return untrained_model


@pytest.fixture(scope="module")
def photos_107():
    """Two real photos (chelsea, coffee) at 107 px, ImageNet-normalised, NHWC."""
    return real_photos(107, 2)


def test_grad_cam_at_mixed_7c_is_the_class_activation_map(model, photos_107):
    # Mixed_7c feeds only global average pooling and fc, so dy_c/dA_k = W[c, k] / (H W) and
    # Grad-CAM reduces to ReLU(A @ W[c]) (Zhou et al.'s CAM), up to the positive 1/(H W).
    image = mx.array(photos_107[:1])
    _, taps = model.forward_with_taps(image)
    activation = np.asarray(taps["Mixed_7c"][0])
    weights = np.asarray(model.fc.weight)
    cams = np.maximum(activation @ weights.T, 0)  # (H, W, classes)
    positive = np.flatnonzero(cams.max(axis=(0, 1)) > 0)
    for class_index in positive[:: max(1, len(positive) // 3)][:3]:
        result = grad_cam(model, image, int(class_index), "Mixed_7c")
        cam = cams[:, :, class_index]
        np.testing.assert_allclose(result.heatmap, cam / cam.max(), atol=1e-5)
        np.testing.assert_allclose(
            result.channel_weights, weights[class_index] / (activation.shape[0] ** 2), rtol=1e-5
        )


def test_a_class_with_no_positive_evidence_gets_an_all_zero_map(model, photos_107):
    image = mx.array(photos_107[:1])
    _, taps = model.forward_with_taps(image)
    cams = np.maximum(np.asarray(taps["Mixed_7c"][0]) @ np.asarray(model.fc.weight).T, 0)
    silent = np.flatnonzero(cams.max(axis=(0, 1)) == 0)
    assert len(silent) > 0, "the fixture image should leave some class without evidence"
    result = grad_cam(model, image, int(silent[0]), "Mixed_7c")
    assert result.peak == 0.0
    assert np.all(result.heatmap == 0.0)


@pytest.mark.parametrize(
    ("layer", "torch_modules"),
    [
        ("Mixed_6b", ["Mixed_6b"]),
        ("Mixed_5b.branch3x3dbl", ["Mixed_5b.branch3x3dbl_3"]),
        # InceptionE's branch3x3 is the concatenation of its 1x3 and 3x1 convolutions.
        ("Mixed_7b.branch3x3", ["Mixed_7b.branch3x3_2a", "Mixed_7b.branch3x3_2b"]),
        ("Conv2d_4a_3x3", ["Conv2d_4a_3x3"]),
    ],
)
def test_grad_cam_matches_torchvision_autograd(
    calibrated_model, calibrated_weights_dir, photos_107, layer, torch_modules
):
    converted = mlx_inception.load(calibrated_weights_dir)
    class_index = 281
    expected, alphas = torch_grad_cam(
        calibrated_model,
        photos_107[:1],
        class_index,
        [calibrated_model.get_submodule(name) for name in torch_modules],
    )
    result = grad_cam(converted, mx.array(photos_107[:1]), class_index, layer)
    # Both are float32 computations of the same function in different orders, on a network
    # calibrated on real photos: measured 3e-7 to 1.1e-6 of the largest channel weight and
    # 3.3e-6 on the heatmap (2026-12, x86_64, MKL). 1e-3 leaves room for other BLAS libraries
    # and GPU convolution algorithms; a wrong gradient (a missed branch, the wrong class) is
    # off by order one.
    np.testing.assert_allclose(result.channel_weights, alphas, rtol=1e-3,
                               atol=1e-3 * np.abs(alphas).max())
    np.testing.assert_allclose(result.heatmap, expected, atol=2e-3)


def test_grad_cam_explains_the_top_class_by_default(model, photos_107):
    image = mx.array(photos_107[:1])
    top = int(mx.argmax(model(image), axis=-1).item())
    result = grad_cam(model, image, layer="Mixed_6e")
    assert result.class_index == top
    assert result.score == pytest.approx(float(model(image)[0, top]), rel=1e-5)


@pytest.mark.parametrize(
    ("layer", "grid"),
    [("Mixed_7c", 2), ("Mixed_6b.branch7x7dbl", 5), ("Mixed_5d", 11), ("Conv2d_2a_3x3", 51)],
)
def test_heatmap_lies_on_the_layers_grid_scaled_to_a_maximum_of_one(model, photos_107, layer,
                                                                     grid):
    result = grad_cam(model, mx.array(photos_107[:1]), 3, layer)
    assert result.heatmap.shape == (grid, grid)
    assert result.heatmap.dtype == np.float32
    assert result.heatmap.min() >= 0.0
    if result.peak > 0:
        assert result.heatmap.max() == pytest.approx(1.0)
    else:
        assert np.all(result.heatmap == 0)


def test_taps_from_an_earlier_forward_give_the_same_map(model, photos_107):
    image = mx.array(photos_107[:1])
    _, taps = model.forward_with_taps(image)
    fresh = grad_cam(model, image, 7, "Mixed_6a.branch3x3dbl")
    reused = grad_cam(model, image, 7, "Mixed_6a.branch3x3dbl", taps=taps)
    np.testing.assert_allclose(reused.heatmap, fresh.heatmap, atol=1e-6)


def test_a_batch_gives_each_image_the_map_of_its_own_class(model, photos_107):
    batch = grad_cams(model, photos_107, [10, 500], "Mixed_6e")
    for i, class_index in enumerate((10, 500)):
        alone = grad_cam(model, photos_107[i], class_index, "Mixed_6e")
        assert batch[i].class_index == class_index
        np.testing.assert_allclose(batch[i].heatmap, alone.heatmap, atol=1e-5)


def test_every_spatial_layer_is_offered_and_non_spatial_ones_are_not(model):
    layers = spatial_layers(model)
    assert "Mixed_7c" in layers and "Mixed_5b.branch_pool" in layers and "maxpool1" in layers
    assert not {"AuxLogits", "avgpool", "fc"} & set(layers)


@pytest.mark.parametrize(
    ("layer", "message"),
    [("fc", "not one"), ("avgpool", "not one"), ("AuxLogits", "not one"),
     ("Mixed_8a", "unknown layer")],
)
def test_layers_without_a_spatial_map_are_refused(model, photos_107, layer, message):
    with pytest.raises(ValueError, match=message):
        grad_cam(model, photos_107[:1], 0, layer)


def test_class_indices_outside_the_head_are_refused(model, photos_107):
    with pytest.raises(ValueError, match="outside 0..999"):
        grad_cam(model, photos_107[:1], 1000)


def test_a_training_mode_model_is_refused():
    network = InceptionV3(init_weights=False)  # MLX modules start in training mode
    with pytest.raises(ValueError, match="eval"):
        grad_cam(network, np.zeros((75, 75, 3), np.float32), 0)
