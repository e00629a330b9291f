"""Half precision loses no more than PyTorch's own half precision does, on real photos.

The network is torchvision's own ``inception_v3`` with its random initialisation and BatchNorm
statistics calibrated on real photos (``conftest.make_calibrated_model``; pretrained weights
cannot be downloaded here), converted and loaded with ``dtype=`` (BatchNorm folded in float32,
then cast). The reference for how much a 16-bit float may cost is torchvision's model cast to
the same dtype and run by PyTorch on the same input. Measured, as max |logit difference| /
max |float32 logit| per photo: MLX float16 about 2-3e-2, PyTorch float16 1.6-3.4e-2; bfloat16
1e-1 to 1.8e-1 for both (a random network passes rounding errors on undamped; see the README).
Asserted: MLX's worst photo within twice PyTorch's worst photo.
"""

from __future__ import annotations

import copy
import os

import mlx.core as mx
import numpy as np
import pytest

import mlx_inception
from mlx_inception.data.images import load_image
from mlx_inception.data.transforms import preprocess
from mlx_inception.inference.predictor import Predictor
from mlx_inception.model import Preprocessing

torch = pytest.importorskip("torch")
skimage_data = pytest.importorskip("skimage.data")
SKIMAGE = os.path.dirname(skimage_data.__file__)
PHOTOS = [os.path.join(SKIMAGE, n) for n in ("chelsea.png", "coffee.png", "rocket.jpg")]


def relative_error(logits: np.ndarray, reference: np.ndarray) -> float:
    """The worst photo's max |logit difference| relative to its largest reference logit."""
    return float((np.abs(logits - reference).max(1) / np.abs(reference).max(1)).max())


# PyTorch's half-precision convolutions on the CPU are slow (about 10 s per 299-pixel image):
# the photos go in at 107 pixels (resize 122), which this fully convolutional network accepts.
SMALL = Preprocessing(resize_size=122, crop_size=107)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return np.stack([preprocess(load_image(p), SMALL) for p in PHOTOS])


@pytest.fixture(scope="module")
def float32_logits(calibrated_weights_dir, photos) -> np.ndarray:
    model = mlx_inception.load(calibrated_weights_dir)
    return np.array(model(mx.array(photos)))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_loses_no_more_than_pytorch_half_precision(
    calibrated_model, calibrated_weights_dir, photos, float32_logits, dtype
):
    model = mlx_inception.load(calibrated_weights_dir, dtype=dtype)
    half = np.array(model(mx.array(photos).astype(model.fc.weight.dtype)).astype(mx.float32))
    torch_dtype = getattr(torch, dtype)
    with torch.no_grad():
        inputs = torch.from_numpy(photos.transpose(0, 3, 1, 2).copy())
        torch_half = copy.deepcopy(calibrated_model).to(torch_dtype)(inputs.to(torch_dtype))
    torch_error = relative_error(torch_half.float().numpy(), float32_logits)
    assert np.isfinite(half).all()
    assert relative_error(half, float32_logits) <= 2 * torch_error


def test_predictor_in_float16_agrees_with_the_float32_network(
    calibrated_weights_dir, float32_logits
):
    predictor = Predictor.from_source(
        calibrated_weights_dir, dtype="float16", batch_size=3, preprocessing=SMALL
    )
    predictions = predictor.predict(PHOTOS)
    expected = np.array(mx.softmax(mx.array(float32_logits), axis=-1))
    for prediction, probabilities in zip(predictions, expected, strict=True):
        assert prediction.probabilities.dtype == np.float32
        assert prediction.top_k[0].index == int(np.argmax(probabilities))
