"""The Inception Score of a set of images (Salimans et al. 2016, "Improved Techniques for
Training GANs").

IS = exp(E_x KL(p(y|x) || p(y))), computed, as the authors' code (openai/improved-gan) does, on
``splits`` consecutive equal parts of the images, reporting the mean and the (population)
standard deviation over the parts. p(y|x) is the FID network's softmax over its 1008 classes
from pool3 times the classifier's weights without the bias, as in that code
(:func:`.features.class_probabilities`); images are prepared as pytorch-fid prepares them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..model import InceptionV3
from .features import Progress, class_probabilities, extract_features, list_images

DEFAULT_SPLITS = 10  # the original code's default


@dataclass(frozen=True)
class InceptionScore:
    """The mean and standard deviation of the score over ``splits`` parts of ``count`` images."""

    mean: float
    std: float
    splits: int
    count: int


def _safe_log(values: np.ndarray) -> np.ndarray:
    # 0 * log 0 is 0 in the KL divergence; log(1) = 0 in those places keeps it so without NaNs.
    return np.log(np.where(values > 0, values, 1.0))


def inception_score(probabilities: np.ndarray, splits: int = DEFAULT_SPLITS) -> InceptionScore:
    """Return the Inception Score of class probabilities (N, classes), rows summing to 1.

    Part ``i`` holds rows ``i * N // splits`` to ``(i + 1) * N // splits``, in order (no
    shuffling), as in the original code.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        raise DataError(f"probabilities must be (images, classes), got {probabilities.shape}")
    count = probabilities.shape[0]
    if splits < 1:
        raise DataError(f"splits must be at least 1, not {splits}")
    if count < splits:
        raise DataError(
            f"the Inception Score of {splits} splits needs at least {splits} images, got "
            f"{count}: use more images or a smaller --splits"
        )
    scores = []
    for index in range(splits):
        part = probabilities[index * count // splits : (index + 1) * count // splits]
        marginal = part.mean(axis=0, keepdims=True)
        divergence = np.sum(part * (_safe_log(part) - _safe_log(marginal)), axis=1)
        scores.append(np.exp(np.mean(divergence)))
    return InceptionScore(
        mean=float(np.mean(scores)), std=float(np.std(scores)), splits=splits, count=count
    )


def inception_score_of_folder(
    folder: str | os.PathLike,
    model: InceptionV3,
    splits: int = DEFAULT_SPLITS,
    batch_size: int = 50,
    progress: Progress | None = None,
) -> InceptionScore:
    """Return the Inception Score of the images directly inside ``folder`` (sorted by name)."""
    files = score_images(folder, splits)
    features = extract_features(model, files, batch_size=batch_size, progress=progress)
    return inception_score(class_probabilities(model, features), splits=splits)


def score_images(folder: str | os.PathLike, splits: int = DEFAULT_SPLITS) -> list[Path]:
    """Return the images of ``folder`` to score in ``splits`` parts; raise DataError if too few.

    Cheap (nothing is decoded), so a command checks its folder before loading the network.
    """
    if splits < 1:
        raise DataError(f"splits must be at least 1, not {splits}")
    files = list_images(folder)
    if not files:
        raise DataError(
            f"no images in {Path(folder)} (files directly inside it: .bmp, .jpg, .jpeg, .pgm, "
            ".png, .ppm, .tif, .tiff or .webp)"
        )
    if len(files) < max(splits, 1):
        raise DataError(
            f"{Path(folder)}: {len(files)} images, but {splits} splits need at least {splits}: "
            "use more images or a smaller --splits"
        )
    return files
