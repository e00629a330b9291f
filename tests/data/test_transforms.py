"""Preprocessing gives torchvision's own tensors, bit for bit, on real photos.

The reference is torchvision's ``Inception_V3_Weights.IMAGENET1K_V1.transforms()`` applied to
the photo opened with Pillow and converted to RGB (what torchvision's ImageFolder loader does).
Tolerance: none. Both sides resize with the same Pillow call and then do the same float32
operations (divide by 255, subtract the mean, divide by the std) in the same order, so every
value is expected to be identical; any difference is a bug.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from PIL import Image

from mlx_inception.data.images import load_image
from mlx_inception.data.transforms import (
    center_crop,
    crop_box,
    preprocess,
    resample_filter,
    resize_shorter,
    timm_preprocessing,
)
from mlx_inception.errors import InceptionError
from mlx_inception.model import Preprocessing

torch = pytest.importorskip("torch")
transforms = pytest.importorskip("torchvision.transforms")
skimage_data = pytest.importorskip("skimage.data")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

SKIMAGE = os.path.dirname(skimage_data.__file__)
SKLEARN = os.path.join(os.path.dirname(sklearn_datasets.__file__), "images")
# Real photos bundled in the scikit-image and scikit-learn wheels: landscape, portrait-free
# square, large JPEGs and PNGs, one grayscale.
PHOTOS = [
    os.path.join(SKIMAGE, "chelsea.png"),
    os.path.join(SKIMAGE, "coffee.png"),
    os.path.join(SKIMAGE, "astronaut.png"),
    os.path.join(SKIMAGE, "rocket.jpg"),
    os.path.join(SKIMAGE, "hubble_deep_field.jpg"),
    os.path.join(SKIMAGE, "motorcycle_left.png"),
    os.path.join(SKIMAGE, "coins.png"),
    os.path.join(SKLEARN, "china.jpg"),
    os.path.join(SKLEARN, "flower.jpg"),
]


def torchvision_input(path: str, transform) -> np.ndarray:
    """torchvision's tensor for a photo, as HWC numpy."""
    with Image.open(path) as image:
        tensor = transform(image.convert("RGB"))
    return tensor.numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("path", PHOTOS, ids=os.path.basename)
def test_preprocess_is_bit_identical_to_torchvision_inception_v3_transform(path):
    from torchvision.models import Inception_V3_Weights

    expected = torchvision_input(path, Inception_V3_Weights.IMAGENET1K_V1.transforms())
    actual = preprocess(load_image(path), Preprocessing())
    assert actual.dtype == np.float32
    assert actual.shape == (299, 299, 3)
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("path", PHOTOS[:4], ids=os.path.basename)
def test_timm_config_is_bit_identical_to_timms_eval_pipeline_in_torchvision_ops(path):
    # timm's transforms_imagenet_eval for crop_pct 0.875 is exactly this torchvision pipeline:
    # Resize(floor(299 / 0.875), bicubic), CenterCrop(299), ToTensor, Normalize(0.5, 0.5).
    bicubic = transforms.InterpolationMode.BICUBIC
    reference = transforms.Compose(
        [
            transforms.Resize(math.floor(299 / 0.875), interpolation=bicubic),
            transforms.CenterCrop(299),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )
    actual = preprocess(load_image(path), timm_preprocessing())
    np.testing.assert_array_equal(actual, torchvision_input(path, reference))


def test_timm_crop_pct_gives_a_resize_to_341_bicubic():
    config = timm_preprocessing()
    assert (config.resize_size, config.crop_size, config.interpolation) == (341, 299, "bicubic")
    assert config.mean == config.std == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    "size", [(451, 300), (300, 451), (299, 299), (700, 93), (93, 700), (343, 342)]
)
def test_resize_shorter_matches_torchvision_resize_for_every_aspect_ratio(size):
    image = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), np.uint8)
    )
    expected = transforms.Resize(342)(image)
    actual = resize_shorter(image, 342, "bilinear")
    assert actual.size == expected.size
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))


@pytest.mark.parametrize("size", [(300, 300), (301, 300), (302, 303), (299, 299), (200, 250)])
def test_centre_crop_box_matches_torchvision_center_crop_including_padding(size):
    image = Image.fromarray(
        np.random.default_rng(1).integers(1, 256, (size[1], size[0], 3), np.uint8)
    )
    expected = transforms.CenterCrop(299)(image)
    actual = image.crop(crop_box(image.width, image.height, 299, 299))
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))


def test_center_crop_is_the_image_the_network_sees():
    image = load_image(PHOTOS[0])
    preprocessing = Preprocessing(resize_size=122, crop_size=107)
    crop = center_crop(image, preprocessing)
    assert crop.size == (107, 107)
    mean = np.asarray(preprocessing.mean, np.float32)
    std = np.asarray(preprocessing.std, np.float32)
    np.testing.assert_array_equal(
        (np.asarray(crop).astype(np.float32) / np.float32(255) - mean) / std,
        preprocess(image, preprocessing),
    )


def test_unknown_interpolation_is_refused_with_the_names_that_work():
    # Refused when the config is built (read from a file), before any image is decoded.
    with pytest.raises(ValueError, match="unknown preprocessing interpolation 'cubic'.*bilinear"):
        Preprocessing(interpolation="cubic")
    with pytest.raises(InceptionError, match="unknown interpolation 'cubic'.*bilinear"):
        resample_filter("cubic")
