"""Preprocessing with Pillow and numpy, step for step what torchvision and timm do on PIL images.

torchvision's ``Inception_V3_Weights.IMAGENET1K_V1.transforms()`` resizes the shorter side to 342
with Pillow's own (antialiased) bilinear resize, centre-crops 299, divides by 255 and normalises
with ImageNet mean/std in float32. Doing the same Pillow calls and the same float32 operations in
the same order gives bit-identical input (``tests/data/test_transforms.py``). timm's configs differ
only in the numbers: ``crop_pct`` 0.875 means a resize to floor(299 / 0.875) = 341, bicubic, and
mean = std = 0.5 for its tf/tv weights.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ..errors import ImageError, InceptionError
from ..model import Preprocessing
from .images import DEFAULT_MAX_PIXELS

# The interpolation names a config may use and Pillow's filters for them (torchvision's and
# timm's names; both map them to these same Pillow filters for PIL input).
INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def resample_filter(interpolation: str) -> Image.Resampling:
    """Return Pillow's resampling filter for an interpolation name such as ``"bilinear"``."""
    try:
        return INTERPOLATIONS[interpolation.lower()]
    except KeyError:
        raise InceptionError(
            f"unknown interpolation {interpolation!r} in the preprocessing config; use one of "
            f"{', '.join(INTERPOLATIONS)}"
        ) from None


def resized_shape(width: int, height: int, shorter: int) -> tuple[int, int]:
    """Return (width, height) with the shorter side ``shorter`` and the aspect ratio kept.

    The longer side is truncated, not rounded, as torchvision's ``Resize(int)`` does.
    """
    if width <= height:
        return shorter, int(shorter * height / width)
    return int(shorter * width / height), shorter


def resize_shorter(image: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """Return ``image`` resized so its shorter side is ``size`` (Pillow's antialiased resize).

    The resized image is bounded like a decoded one (``DEFAULT_MAX_PIXELS``): a long thin image
    (a 108-byte PNG of 1x6000 pixels) would otherwise grow to 342x2,052,000 pixels, 2.1 GB,
    before the centre crop keeps 299x299 of it. Such an image raises ``ImageError`` instead.
    """
    target = resized_shape(image.width, image.height, size)
    if target == image.size:
        return image
    if target[0] * target[1] > DEFAULT_MAX_PIXELS:
        raise ImageError(
            f"{image.width}x{image.height} pixels is too elongated: its shorter side resized to "
            f"{size} makes {target[0]}x{target[1]}, over the limit of {DEFAULT_MAX_PIXELS:,} "
            "pixels; crop it to a less elongated shape"
        )
    return image.resize(target, resample_filter(interpolation))


def crop_box(
    width: int, height: int, crop_width: int, crop_height: int
) -> tuple[int, int, int, int]:
    """Return the (left, top, right, bottom) box of torchvision's centre crop.

    Offsets use Python's round() of half the margin, as torchvision does; a crop larger than
    the image extends past its edges (Pillow fills that with black, torchvision pads zeros).
    """
    if crop_width > width:
        left = -((crop_width - width) // 2)
    else:
        left = int(round((width - crop_width) / 2.0))
    if crop_height > height:
        top = -((crop_height - height) // 2)
    else:
        top = int(round((height - crop_height) / 2.0))
    return left, top, left + crop_width, top + crop_height


def center_crop(image: Image.Image, preprocessing: Preprocessing | None = None) -> Image.Image:
    """Return the exact square the network sees: resized, centre-cropped, not normalised.

    For display (the desktop app shows it); ``preprocess`` gives the same pixels as input.
    """
    preprocessing = preprocessing or Preprocessing()
    resized = resize_shorter(image, preprocessing.resize_size, preprocessing.interpolation)
    size = preprocessing.crop_size
    return resized.crop(crop_box(resized.width, resized.height, size, size))


def normalize(pixels: np.ndarray, preprocessing: Preprocessing | None = None) -> np.ndarray:
    """Return uint8 RGB pixels (..., 3) as float32 (x / 255 - mean) / std.

    The same float32 operations in the same order as torchvision's ``convert_image_dtype`` and
    ``normalize`` (divide by 255, subtract, divide), so results are bit-identical.
    """
    preprocessing = preprocessing or Preprocessing()
    mean = np.asarray(preprocessing.mean, dtype=np.float32)
    std = np.asarray(preprocessing.std, dtype=np.float32)
    scaled = np.asarray(pixels, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    return (scaled - mean) / std


def preprocess(image: Image.Image, preprocessing: Preprocessing | None = None) -> np.ndarray:
    """Return the network input for one RGB image: float32, (crop, crop, 3), normalised."""
    return normalize(np.asarray(center_crop(image, preprocessing)), preprocessing)


def timm_preprocessing(
    crop_size: int = 299,
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
    std: tuple[float, float, float] = (0.5, 0.5, 0.5),
) -> Preprocessing:
    """Return the Preprocessing of a timm config (``crop_pct`` -> resize floor(crop / pct)).

    timm's Inception-v3 weights use crop_pct 0.875 and bicubic; the tf/tv weights mean = std =
    0.5, the gluon weights ImageNet mean/std.
    """
    return Preprocessing(
        resize_size=math.floor(crop_size / crop_pct),
        crop_size=crop_size,
        interpolation=interpolation,
        mean=mean,
        std=std,
    )


def _bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, ...]:
    """Return PyTorch's bilinear source indices and weights (``align_corners=False``).

    As ``F.interpolate(mode="bilinear")`` on the CPU computes them, in float32: source position
    ``(dst + 0.5) * in / out - 0.5`` clamped at 0, its floor and the next pixel (clamped to the
    edge), weighted by the distances. The position is rounded to float32 once, after the
    multiply and subtract, as PyTorch's compiled kernel (a fused multiply-add) rounds it; two
    roundings moved some weights by an ulp of the position (up to 6e-6 of a pixel's value).
    """
    scale = np.float32(in_size) / np.float32(out_size)
    centres = np.arange(out_size, dtype=np.float64) + 0.5
    position = (np.float64(scale) * centres - 0.5).astype(np.float32)
    position = np.maximum(position, np.float32(0.0))
    first = np.minimum(np.floor(position).astype(np.int64), in_size - 1)
    second = np.minimum(first + 1, in_size - 1)
    weight_second = np.clip(position - first.astype(np.float32), 0, 1).astype(np.float32)
    weight_first = np.float32(1.0) - weight_second
    return first, second, weight_first, weight_second


def resize_bilinear(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Return float32 ``array`` (H, W, ...) resized to ``size`` = (height, width) as
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` does.

    Pixel centres aligned (an 8x8 map lands on a 299x299 crop where its cells are); width
    first, then height, the order in which PyTorch's CPU kernel combines the four neighbours;
    no antialiasing (and so not torchvision's or Pillow's resize of images).
    """
    array = np.asarray(array, dtype=np.float32)
    rows = _bilinear_taps(array.shape[0], size[0])
    cols = _bilinear_taps(array.shape[1], size[1])
    extra = (None,) * (array.ndim - 2)  # broadcast the weights over trailing axes (channels)
    array = array[:, cols[0]] * cols[2][(None, slice(None), *extra)] + (
        array[:, cols[1]] * cols[3][(None, slice(None), *extra)])
    return array[rows[0]] * rows[2][(slice(None), *extra, None)] + (
        array[rows[1]] * rows[3][(slice(None), *extra, None)])
