"""Classify images with a loaded model: top-k names and probabilities, batched, with taps.

Decoding and preprocessing run on a few background threads (Pillow releases the GIL while it
decodes and resizes) while the network runs on the previous batch. A file that cannot be read
gives a ``Prediction`` with ``error`` set; the others are predicted as usual.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import mlx.core as mx
import numpy as np
from PIL import Image

from ..data.images import DEFAULT_MAX_PIXELS, describe, load_image, naming
from ..data.labels import load_labels
from ..errors import InceptionError
from ..fast import fast_model
from ..model import InceptionV3, Preprocessing
from .crops import CROP_COUNTS, multi_crop

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray


@dataclass
class TopK:
    """One of an image's most probable classes."""

    index: int
    label: str | None
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "probability": self.probability}


@dataclass
class Prediction:
    """What the network made of one input, or why it could not be read (``error``)."""

    source: str
    top_k: list[TopK] = field(default_factory=list)
    probabilities: np.ndarray | None = None
    error: str | None = None
    # Every named activation of the forward pass (``InceptionV3.forward_with_taps``) for this
    # image, without the batch axis, when asked for.
    taps: dict[str, np.ndarray] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form: ``{"path", "top_k": [{index, label, probability}]}`` or
        ``{"path", "error"}``."""
        if self.error is not None:
            return {"path": self.source, "error": self.error}
        return {"path": self.source, "top_k": [entry.to_dict() for entry in self.top_k]}


def softmax(logits: mx.array) -> mx.array:
    """Return softmax probabilities over the last axis, computed in float32."""
    return mx.softmax(logits.astype(mx.float32), axis=-1)


def top_k_of(probabilities: np.ndarray, k: int, labels: list[str] | None) -> list[TopK]:
    """Return the ``k`` most probable classes, most probable first (ties: lower index first)."""
    order = np.argsort(-probabilities, kind="stable")[: max(0, min(k, probabilities.shape[-1]))]
    return [
        TopK(int(i), labels[i] if labels is not None else None, float(probabilities[i]))
        for i in order
    ]


class Predictor:
    """Top-k classification of paths, bytes, PIL images or arrays with a loaded model.

    ``top_k``: how many classes each prediction lists. ``batch_size``: network inputs per
    forward pass (crops count one each). ``crops``: 1 (the model's preprocessing), 10, 12 or
    144 (``inference.crops``), softmax averaged over the crops. ``preprocessing`` and ``labels``
    default to the model's config. ``workers``: decoding threads.

    ``fast`` (default True): run the network on the fast inference path
    (:func:`mlx_inception.fast.fast_model`: BatchNorm folded, 1x1 convolutions fused,
    ``mx.compile`` on a GPU). The model passed in is not changed: the
    predictor rewrites a copy of its module tree (``self.model``), which holds its own folded
    weights. ``fast=False`` runs ``model`` itself, as it is (and puts it in eval mode).
    """

    def __init__(
        self,
        model: InceptionV3,
        top_k: int = 5,
        batch_size: int = 8,
        crops: int = 1,
        preprocessing: Preprocessing | None = None,
        labels: list[str] | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        workers: int = 2,
        fast: bool = True,
    ):
        if crops not in CROP_COUNTS:
            raise InceptionError(
                f"unsupported number of crops {crops}; use one of 1, 10, 12 or 144"
            )
        if batch_size < 1:
            raise InceptionError(f"batch size must be at least 1, not {batch_size}")
        if fast:
            model = fast_model(model)
        else:
            model.eval()
        self.model = model
        self.fast = fast
        self.top_k = top_k
        self.batch_size = batch_size
        self.crops = crops
        self.preprocessing = preprocessing or model.config.preprocessing
        self.labels = labels if labels is not None else load_labels(model.config)
        self.max_pixels = max_pixels
        self.workers = max(1, workers)
        # Feed the network its own dtype: float32 input to a float16 network would promote
        # every convolution back to float32.
        self.input_dtype = model.fc.weight.dtype

    @classmethod
    def from_source(
        cls,
        source: str | os.PathLike,
        dtype: str | mx.Dtype | None = None,
        fast: bool = True,
        **kwargs: Any,
    ) -> Predictor:
        """Return a Predictor for ``mlx_inception.load(source, dtype)``; ``kwargs`` go to it.

        The loaded model belongs to the predictor alone, so with ``fast`` it is rewritten in
        place: one set of weights in memory, not two.
        """
        from ..loading import load

        model = load(source, dtype=dtype)
        if fast:
            model = fast_model(model, copy=False)
        return cls(model, fast=fast, **kwargs)

    # --- the network ------------------------------------------------------------------------

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """Return softmax probabilities (N, classes) for preprocessed input (N, H, W, 3)."""
        outputs = []
        for start in range(0, len(inputs), self.batch_size):
            batch = mx.array(inputs[start : start + self.batch_size]).astype(self.input_dtype)
            probabilities = softmax(self.model(batch))
            mx.eval(probabilities)
            outputs.append(np.array(probabilities))
        return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)

    def _forward_with_taps(
        self, inputs: np.ndarray, keep: set[str] | None
    ) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
        logits, taps = self.model.forward_with_taps(mx.array(inputs).astype(self.input_dtype))
        probabilities = softmax(logits)
        taps = {name: value for name, value in taps.items() if keep is None or name in keep}
        mx.eval(probabilities, *taps.values())
        arrays = {name: np.array(value.astype(mx.float32)) for name, value in taps.items()}
        per_image = [{name: array[i] for name, array in arrays.items()} for i in range(len(inputs))]
        return np.array(probabilities), per_image

    # --- images -----------------------------------------------------------------------------

    def prepare(self, source: ImageInput) -> np.ndarray:
        """Return the network input for one image: (crops, H, W, 3) float32. Raises ImageError."""
        with naming(source):
            return multi_crop(load_image(source, self.max_pixels), self.preprocessing, self.crops)

    def _prepared(self, sources: Iterable[ImageInput]) -> Iterator[tuple[str, np.ndarray | str]]:
        """Yield (name, input array or error message), decoding ahead on worker threads."""

        def work(source: ImageInput) -> tuple[str, np.ndarray | str]:
            try:
                return describe(source), self.prepare(source)
            except InceptionError as error:
                return describe(source), str(error)
            except Exception as error:  # one odd file must not stop the others
                return describe(source), f"{describe(source)}: {type(error).__name__}: {error}"

        iterator = iter(sources)
        # Decode about two batches ahead, counted in network inputs: 144 crops of one 299-pixel
        # image are already 150 MB of float32.
        lookahead = max(2 * self.workers, -(-2 * self.batch_size // self.crops))
        with ThreadPoolExecutor(self.workers) as pool:
            pending = [pool.submit(work, s) for s in islice(iterator, lookahead)]
            while pending:
                result = pending.pop(0).result()
                for source in islice(iterator, 1):
                    pending.append(pool.submit(work, source))
                yield result

    def iter_predict(
        self, inputs: ImageInput | Iterable[ImageInput], taps: bool | Iterable[str] = False
    ) -> Iterator[Prediction]:
        """Yield one Prediction per input, in order, as soon as its batch is done.

        ``taps``: True for every activation of the forward pass, or the names to keep (they
        are large: tens of MB per 299-pixel image for all of them). Taps need ``crops=1``.
        """
        keep = None if taps is True else (set(taps) if taps else set())
        want_taps = taps is True or bool(keep)
        if want_taps and self.crops != 1:
            raise InceptionError("activation taps are only available with crops=1")
        pending: list[tuple[str, np.ndarray | str]] = []
        count = 0
        for item in self._prepared(_as_sources(inputs)):
            pending.append(item)
            if not isinstance(item[1], str):
                count += len(item[1])
            if count >= self.batch_size:
                yield from self._run(pending, keep if want_taps else None, want_taps)
                pending, count = [], 0
        if pending:
            yield from self._run(pending, keep if want_taps else None, want_taps)

    def predict(
        self, inputs: ImageInput | Iterable[ImageInput], taps: bool | Iterable[str] = False
    ) -> list[Prediction]:
        """Return one Prediction per input (a single input gives a list of one)."""
        return list(self.iter_predict(inputs, taps=taps))

    def _run(
        self, items: list[tuple[str, np.ndarray | str]], keep: set[str] | None, want_taps: bool
    ) -> list[Prediction]:
        arrays = [value for _, value in items if not isinstance(value, str)]
        image_taps: list[dict[str, np.ndarray]] = []
        if arrays:
            stacked = np.concatenate(arrays)
            if want_taps:
                crop_probabilities, image_taps = self._forward_with_taps(stacked, keep)
            else:
                crop_probabilities = self.probabilities(stacked)
        results: list[Prediction] = []
        offset = 0
        for name, value in items:
            if isinstance(value, str):
                results.append(Prediction(name, error=value))
                continue
            # Average the softmax over the image's crops (one row when crops=1).
            probabilities = crop_probabilities[offset : offset + len(value)].mean(axis=0)
            if not np.all(np.isfinite(probabilities)):
                # NaN is no probability (nor valid JSON): the image gets an error instead.
                results.append(Prediction(name, error=self._non_finite_error(name)))
                offset += len(value)
                continue
            prediction = Prediction(
                name, top_k_of(probabilities, self.top_k, self.labels), probabilities
            )
            if want_taps:
                prediction.taps = image_taps[offset]
            offset += len(value)
            results.append(prediction)
        return results

    def _non_finite_error(self, name: str) -> str:
        """Return the one-line error for an image whose output holds NaN or infinity."""
        if self.input_dtype == mx.float16:
            cause = ("float16 overflowed (its largest value is 65504): run in float32 or "
                     "bfloat16 (--dtype)")
        else:
            cause = "the weights hold NaN/infinite values or activations too large to represent"
        return f"{name}: the network's output is not finite (NaN or infinity); {cause}"


def _as_sources(inputs: ImageInput | Iterable[ImageInput]) -> Iterable[ImageInput]:
    """Return ``inputs`` as an iterable of images: one image becomes a list of one."""
    single = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray)
    if isinstance(inputs, single):
        return [inputs]
    return inputs
