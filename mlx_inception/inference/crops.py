"""Multi-crop evaluation: the 10-, 12- and 144-crop views of one image, as network inputs.

- 1 crop: the model's own preprocessing (resize the shorter side, centre crop).
- 10 crops (torchvision's ``TenCrop``): after the same resize, the 4 corner crops and the centre
  crop, then the same 5 of the horizontally mirrored image.
- 12 crops (this package's protocol; the paper does not define its own): the 144-crop recipe
  at one scale and one square: resize the shorter side to ``resize_size``, take the centre
  square, then its 4 corner crops, its centre crop and the whole square resized to the crop
  size, and the same 6 of the mirrored square.
- 144 crops (GoogLeNet, Szegedy et al. 2014, section 7, used for Inception-v3's Table 4):
  4 scales x 3 squares x 6 crops x 2 mirrors. The shorter side is resized to 256, 288, 320 and
  352 pixels for a 224-pixel network, i.e. ``round(crop_size * s / 224)`` here (342, 384, 427
  and 470 for 299); the left, centre and right squares (top, middle, bottom for portrait
  images) are taken; each gives the 4 corner crops, the centre crop and the square resized to
  the crop size; all 72 are mirrored.

Softmax outputs are averaged over the crops of an image (``inference.predictor``).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..data.transforms import crop_box, normalize, resample_filter, resize_shorter
from ..errors import InceptionError
from ..model import Preprocessing

CROP_COUNTS = (1, 10, 12, 144)

# GoogLeNet's four shorter-side sizes for its 224-pixel crops (section 7 of its paper).
GOOGLENET_SCALES = (256, 288, 320, 352)
GOOGLENET_CROP = 224


def five_crop(image: Image.Image, size: int) -> list[Image.Image]:
    """Return the top-left, top-right, bottom-left, bottom-right and centre crops (torchvision's
    ``five_crop`` order)."""
    width, height = image.size
    return [
        image.crop((0, 0, size, size)),
        image.crop((width - size, 0, width, size)),
        image.crop((0, height - size, size, height)),
        image.crop((width - size, height - size, width, height)),
        image.crop(crop_box(width, height, size, size)),
    ]


def mirror(image: Image.Image) -> Image.Image:
    """Return ``image`` flipped left to right."""
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def multi_scale_sizes(crop_size: int) -> list[int]:
    """Return the 144-crop protocol's four shorter-side sizes for a ``crop_size`` network."""
    return [round(crop_size * s / GOOGLENET_CROP) for s in GOOGLENET_SCALES]


def squares(image: Image.Image) -> list[Image.Image]:
    """Return the left, centre and right squares (top, middle, bottom if portrait)."""
    width, height = image.size
    side = min(width, height)
    if width >= height:
        offsets = [0, int(round((width - side) / 2.0)), width - side]
        return [image.crop((x, 0, x + side, side)) for x in offsets]
    offsets = [0, int(round((height - side) / 2.0)), height - side]
    return [image.crop((0, y, side, y + side)) for y in offsets]


def _six_crops(square: Image.Image, preprocessing: Preprocessing) -> list[Image.Image]:
    """Return the 4 corners, the centre and the whole square resized, of ``square``."""
    size = preprocessing.crop_size
    whole = square.resize((size, size), resample_filter(preprocessing.interpolation))
    return five_crop(square, size) + [whole]


def crop_images(image: Image.Image, preprocessing: Preprocessing, count: int) -> list[Image.Image]:
    """Return the ``count`` crops (1, 10, 12 or 144) of an RGB image as images, in fixed order."""
    size = preprocessing.crop_size
    interpolation = preprocessing.interpolation
    if count == 1:
        resized = resize_shorter(image, preprocessing.resize_size, interpolation)
        return [resized.crop(crop_box(resized.width, resized.height, size, size))]
    if count == 10:
        resized = resize_shorter(image, preprocessing.resize_size, interpolation)
        return five_crop(resized, size) + five_crop(mirror(resized), size)
    if count == 12:
        resized = resize_shorter(image, preprocessing.resize_size, interpolation)
        centre = squares(resized)[1]
        return _six_crops(centre, preprocessing) + _six_crops(mirror(centre), preprocessing)
    if count == 144:
        crops: list[Image.Image] = []
        for scale in multi_scale_sizes(size):
            for square in squares(resize_shorter(image, scale, interpolation)):
                crops += _six_crops(square, preprocessing)
                crops += _six_crops(mirror(square), preprocessing)
        return crops
    raise InceptionError(f"unsupported number of crops {count}; use one of 1, 10, 12 or 144")


def multi_crop(image: Image.Image, preprocessing: Preprocessing, count: int) -> np.ndarray:
    """Return the ``count`` crops of an RGB image as input: float32 (count, crop, crop, 3)."""
    return np.stack(
        [
            normalize(np.asarray(crop), preprocessing)
            for crop in crop_images(image, preprocessing, count)
        ]
    )
