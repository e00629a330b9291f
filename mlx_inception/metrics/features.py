"""The FID network and its features: Google's 2015 Inception graph as pytorch-fid runs it.

The Frechet Inception Distance (Heusel et al. 2017) and the Inception Score (Salimans et al. 2016)
were defined with TensorFlow's ``inception-2015-12-05`` graph. pytorch-fid ports it as
torchvision's Inception-v3 with three changes, all reproduced here as configuration of the same
MLX network (:func:`fid_inception_config`):

- the average pools of Mixed_5b..5d, 6b..6e and 7b do not count padded zeros (TensorFlow's
  "SAME" pooling: ``pool_count_include_pad=False``);
- Mixed_7c's pooling branch max-pools (``mixed_7c_pool="max"``);
- the classifier has 1008 outputs (``num_classes=1008``).

Images are decoded and scaled as pytorch-fid does: Pillow's ``convert("RGB")``, values / 255,
PyTorch's bilinear resize to 299x299 (``align_corners=False``, no antialiasing, aspect ratio not
kept), then ``2 x - 1``. Features are the 2048 globally averaged outputs of Mixed_7c ("pool3");
pytorch-fid's other ``dims`` (64, 192, 768) average earlier layers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..atomic import check_destination
from ..checkpoints import convert, store
from ..data.transforms import resize_bilinear
from ..errors import CheckpointError, DataError, ImageError
from ..fast import optimize_for_inference
from ..model import InceptionV3, InceptionV3Config, Preprocessing

# pytorch-fid's published port of inception-2015-12-05 (the name ends in its SHA-256 prefix).
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + FID_WEIGHTS_NAME
)
# Where the command line looks for the weights when --weights is not given.
WEIGHTS_ENVIRONMENT_VARIABLE = "MLX_INCEPTION_FID_WEIGHTS"
# The 2015 graph's classifier: 1008 outputs (1000 ImageNet classes and 8 unused ones).
FID_NUM_CLASSES = 1008
FID_IMAGE_SIZE = 299

# pytorch-fid's ``--dims`` -> the layer whose spatial mean gives features of that size.
FEATURE_LAYERS = {64: "maxpool1", 192: "maxpool2", 768: "Mixed_6e", 2048: "avgpool"}

# pytorch-fid's file endings (matched here in any case; names starting with "." are skipped,
# as its glob skips them).
IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")

_PUBLISHED_NAME = re.compile(r"^pt_inception-2015-12-05-([0-9a-f]{8})\.pth$")

Progress = Callable[[int, int], None]


def fid_inception_config() -> InceptionV3Config:
    """Return the config of the FID network: pytorch-fid's patched Inception-v3, 1008 classes."""
    return InceptionV3Config(
        num_classes=FID_NUM_CLASSES,
        aux_logits=False,
        transform_input=False,
        pool_count_include_pad=False,
        mixed_7c_pool="max",
        # For prediction with these weights: the network expects 2 x - 1 of a 299x299 image.
        preprocessing=Preprocessing(
            resize_size=FID_IMAGE_SIZE, crop_size=FID_IMAGE_SIZE, mean=(0.5,) * 3, std=(0.5,) * 3
        ),
        labels=None,
    )


def _as_fid_config(config: InceptionV3Config) -> InceptionV3Config:
    """Return the FID architecture with the head (classes, aux) and source of ``config``."""
    fid = fid_inception_config()
    fid.num_classes, fid.aux_logits = config.num_classes, config.aux_logits
    fid.source = config.source
    return fid


def _require_fid_head(config: InceptionV3Config, where: str | os.PathLike) -> None:
    if config.num_classes != FID_NUM_CLASSES:
        raise CheckpointError(
            f"{where} has {config.num_classes} classes, not the FID network's "
            f"{FID_NUM_CLASSES}: use pytorch-fid's {FID_WEIGHTS_NAME} ({FID_WEIGHTS_URL})"
        )


def convert_fid_weights(path: str | os.PathLike) -> convert.Conversion:
    """Return the FID network's MLX weights and config converted from a checkpoint file.

    ``path``: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (read with PyTorch) or a
    ``.safetensors`` file with the same keys (read without it). The keys are torchvision's, so
    the layout rules of :mod:`mlx_inception.checkpoints.convert` apply unchanged; only the
    architecture differs. A file named like the published one must carry that SHA-256 prefix.
    """
    path = Path(path)
    conversion = convert.convert_file(path, fid_inception_config())
    match = _PUBLISHED_NAME.match(path.name)
    digest = conversion.config.source.get("sha256", "")
    if match and not digest.startswith(match.group(1)):
        raise CheckpointError(
            f"{path}: SHA-256 starts with {digest[:8]}, not {match.group(1)} as its name says: "
            f"the download is damaged, fetch it again from {FID_WEIGHTS_URL}"
        )
    _require_fid_head(conversion.config, path)
    conversion.config = _as_fid_config(conversion.config)
    return conversion


def save_fid_weights(src: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Convert pytorch-fid's checkpoint into a weights directory (atomic) and return it.

    The directory loads without PyTorch, with :func:`load_fid_inception` or
    ``mlx_inception.load``, whose ``config.json`` then builds the FID architecture.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CheckpointError(f"cannot write {out_dir}: it is a file, not a folder")
    check_destination(out_dir, CheckpointError)  # before reading and converting 95 MB
    conversion = convert_fid_weights(src)
    return store.save_weights(out_dir, conversion.weights, conversion.config)


def load_fid_inception(
    source: str | os.PathLike | None = None, fast: bool = True
) -> InceptionV3:
    """Return the FID network in eval mode (float32), with weights from ``source``.

    ``source``: pytorch-fid's ``.pth`` (needs PyTorch), a ``.safetensors`` file with its keys,
    a directory made by :func:`save_fid_weights` or ``mlx-inception convert``, or a name that
    ``mlx_inception.load`` resolves. ``None`` reads the path from the environment variable
    ``MLX_INCEPTION_FID_WEIGHTS``. Whatever ``config.json`` a directory holds, the network is
    built with the FID architecture: its weights only fit that network.

    ``fast`` (default True): the network is rewritten for inference
    (:func:`mlx_inception.fast.optimize_for_inference`: BatchNorm folded, 1x1
    convolutions fused; features agree with the plain network to float32 rounding). Its
    ``fc`` stays as it was, so :func:`class_probabilities` is unchanged. ``fast=False`` gives
    the plain network, with torchvision's parameter names (to train or take gradients).
    """
    from ..loading import build, resolve

    source = source or os.environ.get(WEIGHTS_ENVIRONMENT_VARIABLE)
    if not source:
        raise CheckpointError(
            f"no FID weights given: download {FID_WEIGHTS_URL} and pass it with --weights "
            f"(or set {WEIGHTS_ENVIRONMENT_VARIABLE})"
        )
    path = resolve(source)
    if path.is_dir():
        if not store.is_weights_dir(path):
            raise CheckpointError(
                f"{path} is not a weights directory: pass {FID_WEIGHTS_NAME} or a directory "
                "converted from it"
            )
        weights, saved = store.load_weights(path)
        _require_fid_head(saved, path)
        config = _as_fid_config(saved)
    else:
        conversion = convert_fid_weights(path)
        weights, config = conversion.weights, conversion.config
    model = build(weights, config)
    # Built here and held by no one else: rewritten in place, one set of weights in memory.
    return optimize_for_inference(model) if fast else model


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Return the image files directly inside ``folder``, sorted by path as pytorch-fid does."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    return sorted(
        path
        for path in folder.iterdir()
        if not path.name.startswith(".")
        and path.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS
        and path.is_file()
    )


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Return an image file as uint8 (H, W, 3), decoded as pytorch-fid decodes it.

    Pillow's ``convert("RGB")`` with nothing else (no EXIF rotation, alpha dropped, not
    composited), unlike :func:`mlx_inception.data.images.load_image`: FID values are only
    comparable when every tool sees the same pixels.
    """
    from PIL import UnidentifiedImageError

    from ..data.images import open_image

    try:
        with open_image(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: cannot decode as an image (not a format Pillow reads)") from None
    except Exception as error:  # Pillow raises many types for damaged files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ImageError(f"{path}: cannot decode as an image ({reason})") from None


def fid_input(path: str | os.PathLike) -> np.ndarray:
    """Return the FID network's input for one image file: float32 (299, 299, 3) in [-1, 1]."""
    pixels = read_image(path).astype(np.float32) / np.float32(255.0)
    pixels = resize_bilinear(pixels, (FID_IMAGE_SIZE, FID_IMAGE_SIZE))
    return np.float32(2.0) * pixels - np.float32(1.0)


def _batches(
    files: Sequence[str | os.PathLike], batch_size: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start index, stacked inputs), decoding the next batch while one is computed."""
    starts = range(0, len(files), batch_size)
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:

        def submit(start: int):
            return [pool.submit(fid_input, path) for path in files[start : start + batch_size]]

        pending = submit(0) if files else []
        for index, start in enumerate(starts):
            current = pending
            if index + 1 < len(starts):
                pending = submit(starts[index + 1])
            yield start, np.stack([future.result() for future in current])


def extract_features(
    model: InceptionV3,
    files: Sequence[str | os.PathLike],
    batch_size: int = 50,
    dims: int = 2048,
    progress: Progress | None = None,
) -> np.ndarray:
    """Return the features of each image file as float64 (N, dims), in the order of ``files``.

    ``dims``: 2048 (pool3, the standard), or pytorch-fid's 768, 192, 64 (spatial means of
    Mixed_6e, maxpool2, maxpool1). ``progress(done, total)`` is called after each batch.
    ``model`` runs as it is given (:func:`load_fid_inception` gives the fast inference path).
    """
    if dims not in FEATURE_LAYERS:
        choices = ", ".join(map(str, FEATURE_LAYERS))
        raise DataError(f"unsupported dims {dims}: choose one of {choices}")
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, not {batch_size}")
    layer = FEATURE_LAYERS[dims]
    features = np.empty((len(files), dims), dtype=np.float64)
    for start, batch in _batches(files, batch_size):
        output = model.features(mx.array(batch), layer)
        if output.ndim == 4:
            output = mx.mean(output, axis=(1, 2))
        features[start : start + len(batch)] = np.array(output.astype(mx.float32))
        if progress is not None:
            progress(start + len(batch), len(files))
    return features


def class_probabilities(model: InceptionV3, features: np.ndarray) -> np.ndarray:
    """Return softmax class probabilities (N, classes), float64, from pool3 ``features``.

    As the Inception Score's original code (openai/improved-gan) computes them: pool3 times the
    classifier's weight matrix, without its bias.
    """
    weight = np.array(model.fc.weight.astype(mx.float32), dtype=np.float64)
    logits = np.asarray(features, dtype=np.float64) @ weight.T
    logits -= logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits)
    return probabilities / probabilities.sum(axis=1, keepdims=True)
