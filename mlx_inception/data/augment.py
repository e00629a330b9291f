"""Training augmentation: a random resized crop and a horizontal flip, with Pillow and numpy.

The crop sampler is torchvision's ``RandomResizedCrop`` (ten tries of an area fraction drawn
uniformly and an aspect ratio drawn log-uniformly, then a centre crop clamped to the ratio
range); the recipe gives it TF-slim's Inception ranges (area 5%-100%, aspect 3/4-4/3). Every
random draw comes from the ``numpy.random.Generator`` passed in, so a sample's augmentation is
fixed by the seed it is given, whichever thread decodes it and whenever.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from ..model import Preprocessing
from .transforms import normalize, resample_filter


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """Return a random (left, top, right, bottom) crop box, as torchvision's sampler draws it."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        crop_width = int(round(math.sqrt(target_area * aspect)))
        crop_height = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            return left, top, left + crop_width, top + crop_height
    # Fallback: the largest centre crop whose aspect ratio is inside the range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        crop_width, crop_height = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        crop_width, crop_height = int(round(height * ratio[1])), height
    else:
        crop_width, crop_height = width, height
    top = (height - crop_height) // 2
    left = (width - crop_width) // 2
    return left, top, left + crop_width, top + crop_height


def augment(
    image: Image.Image,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    interpolation: str = "bilinear",
    flip: bool = True,
) -> Image.Image:
    """Return a random ``size`` x ``size`` crop of ``image``, mirrored with probability 1/2."""
    box = random_resized_crop_box(image.width, image.height, rng, scale, ratio)
    # Pillow crops and resizes in one antialiased pass, like torchvision's resized_crop on PIL.
    crop = image.resize((size, size), resample_filter(interpolation), box=box)
    if flip and rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop


def training_input(
    image: Image.Image,
    size: int,
    rng: np.random.Generator,
    preprocessing: Preprocessing,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> np.ndarray:
    """Return one augmented training input: float32 (size, size, 3), normalised like evaluation."""
    crop = augment(image, size, rng, scale, ratio, preprocessing.interpolation, flip)
    return normalize(np.asarray(crop), preprocessing)
