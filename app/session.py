"""The model side of the app, without Qt: load weights, analyse an image, compute Grad-CAM.

A ``ModelSession`` is used from one worker thread only (MLX arrays belong to the thread that
made them); everything it returns is numpy, PIL or plain Python, safe to hand to the GUI.
It uses only the package's public API.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from PIL import Image

import mlx_inception
from mlx_inception import InceptionV3, Preprocessing, kernels
from mlx_inception.data.images import describe, load_image
from mlx_inception.data.labels import load_labels
from mlx_inception.data.transforms import center_crop, crop_box, normalize, resized_shape
from mlx_inception.errors import ImageError, InceptionError
from mlx_inception.inference.activations import (
    NetworkModule,
    aux_head_taps,
    network_modules,
)
from mlx_inception.inference.calibration import calibrate_batchnorm
from mlx_inception.inference.gradcam import DEFAULT_LAYER, grad_cam, spatial_layers
from mlx_inception.inference.predictor import Predictor, TopK, top_k_of

RANDOM_WEIGHTS = "random"
RANDOM_SEED = 0


@dataclass
class WeightsInfo:
    """What is loaded: a one-line description and whether it is a trained network."""

    source: str
    description: str
    pretrained: bool
    num_classes: int
    modules: list[NetworkModule]
    layers: list[str]
    labels: list[str] | None
    # Why sources tried before this one were not used (startup falls back to random weights).
    notes: list[str] = field(default_factory=list)


@dataclass
class Analysis:
    """Everything the window shows about one image (numpy and PIL only)."""

    request: int
    name: str
    original_size: tuple[int, int]  # (width, height) as decoded
    preview: np.ndarray  # uint8 (h, w, 3): the image shrunk for display (longer side <= 900)
    crop: np.ndarray  # uint8 (S, S, 3): exactly the pixels the network sees
    # Where that crop lies in the original image: (left, top, right, bottom) in its pixels.
    crop_region: tuple[float, float, float, float]
    probabilities: np.ndarray
    top_k: list[TopK]
    taps: dict[str, np.ndarray]  # every activation without the batch axis, float32
    aux_top_k: list[TopK] | None
    seconds: float
    path: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class GradCamResult:
    """A Grad-CAM for the analysis with id ``request``."""

    request: int
    layer: str
    class_index: int
    label: str
    heatmap: np.ndarray
    score: float
    peak: float
    seconds: float


PREVIEW_SIZE = 900


def preview(image: Image.Image, size: int = PREVIEW_SIZE) -> np.ndarray:
    """Return uint8 RGB pixels of ``image`` shrunk to fit ``size`` (never enlarged)."""
    if max(image.size) > size:
        image = image.copy()
        image.thumbnail((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def crop_region(
    size: tuple[int, int], preprocessing: Preprocessing
) -> tuple[float, float, float, float]:
    """Return the centre crop's box in the original image's pixels (it is taken after resizing)."""
    width, height = size
    resized_width, resized_height = resized_shape(width, height, preprocessing.resize_size)
    left, top, right, bottom = crop_box(resized_width, resized_height, preprocessing.crop_size,
                                        preprocessing.crop_size)
    sx, sy = width / resized_width, height / resized_height
    return left * sx, top * sy, right * sx, bottom * sy


def describe_weights(model: InceptionV3, source: str) -> str:
    """Return a one-line description of a loaded model's weights from its config's source."""
    info = model.config.source or {}
    parts = []
    for key in ("registry_name", "repo_id", "file"):
        if info.get(key):
            parts.append(str(info[key]))
            break
    if not parts:
        parts.append(os.path.basename(os.path.normpath(source)) or source)
    accuracy = info.get("reported_accuracy") or {}
    if accuracy.get("top1"):
        parts.append(f"reported top-1 {accuracy['top1']}%")
    parts.append(f"{model.config.num_classes} classes")
    return " · ".join(parts)


def registered_weights() -> list[tuple[str, str]]:
    """Return (name, description) of every registered pretrained weights, the default first."""
    from mlx_inception.checkpoints import registry

    table = registry.load_registry()
    return [(name, table.entries[name].description) for name in table.names()]


def is_local_source(source: str) -> bool:
    """Return True if ``source`` names something on disk (a folder or a checkpoint file)."""
    return Path(os.path.expanduser(source)).exists()


def cached_weights(source: str) -> str | None:
    """Return the local folder of a registry name or repo id if it is already downloaded."""
    from mlx_inception.checkpoints import hub

    try:
        path = hub.cached_path(source)
    except InceptionError:
        return None
    return str(path) if path is not None else None


def startup_sources(last: str | None) -> list[str]:
    """Return the weights to try at startup, none of them a download: ``last`` used, the default.

    A registry name or repo id is tried only when it is in the Hub's cache already.
    """
    sources = []
    if last and last != RANDOM_WEIGHTS:
        if is_local_source(last):
            sources.append(last)
        else:
            try:
                cached = cached_weights(last)
            except Exception:  # a broken cache must never stop the app from opening
                cached = None
            if cached:
                sources.append(cached)
    try:
        from mlx_inception.checkpoints import registry

        default = cached_weights(registry.default_name())
    except Exception:
        default = None
    if default and default not in sources:
        sources.append(default)
    return sources


def progress_bar_class(report: Callable[[float, str], None], interval: float = 0.1) -> type:
    """Return a tqdm class for ``hub.resolve`` that sends progress to ``report(fraction, text)``.

    It prints nothing; ``fraction`` is -1 while the size is unknown. Reports come at most every
    ``interval`` seconds, and always at the end of a file.
    """
    from huggingface_hub.utils import tqdm as hub_tqdm

    class ReportingProgress(hub_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["file"] = io.StringIO()  # never write to the terminal
            super().__init__(*args, **kwargs)
            self._done = int(kwargs.get("initial") or 0)
            self._size = kwargs.get("total")
            self._name = str(kwargs.get("desc") or "weights")
            self._last = 0.0
            self._report(force=True)

        def _report(self, force: bool = False) -> None:
            now = time.monotonic()
            if not force and now - self._last < interval:
                return
            self._last = now
            megabytes = self._done / 1e6
            if self._size:
                report(self._done / self._size,
                       f"downloading {self._name}: {megabytes:.1f} of {self._size / 1e6:.1f} MB")
            else:
                report(-1.0, f"downloading {self._name}: {megabytes:.1f} MB")

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            self._report(force=bool(self._size) and self._done >= self._size)
            return super().update(n)

    return ReportingProgress


def download_weights(source: str, progress: Callable[[float, str], None] | None = None) -> str:
    """Download and convert a registry name or Hub repo id; return its local weights folder.

    ``progress(fraction, text)`` hears about every downloaded chunk (fraction -1: unknown).
    """
    from mlx_inception.checkpoints import hub

    report = progress or (lambda fraction, text: None)
    report(-1.0, f"looking up {source}")
    path = hub.resolve(source, tqdm_class=progress_bar_class(report))
    report(1.0, f"{source} ready")
    return str(path)


class ModelSession:
    """Owns the network and the last analysed image; call it from one thread only."""

    def __init__(self) -> None:
        self.model: InceptionV3 | None = None
        self.predictor: Predictor | None = None
        self.info: WeightsInfo | None = None
        self._input: np.ndarray | None = None
        self._taps: dict[str, np.ndarray] | None = None
        self._request: int | None = None

    # --- weights ------------------------------------------------------------------------------

    def load_weights(self, source: str | os.PathLike | None) -> WeightsInfo:
        """Load ``source`` (registry name, repo id, directory, checkpoint) or, for None or
        ``"random"``, a randomly initialised network; return what is loaded."""
        if source is None or str(source) == RANDOM_WEIGHTS:
            # A fixed seed: the same "random" network every time, so views can be compared.
            mx.random.seed(RANDOM_SEED)
            model = kernels.install(InceptionV3(init_weights=True))
            model.eval()
            mx.eval(model.parameters())
            description = (f"randomly initialised network (torchvision's init, seed {RANDOM_SEED}; "
                           "BatchNorm statistics of the image shown)")
            pretrained, source = False, RANDOM_WEIGHTS
        else:
            model = mlx_inception.load(source)
            description = describe_weights(model, str(source))
            pretrained = True
        info = WeightsInfo(
            source=str(source),
            description=description,
            pretrained=pretrained,
            num_classes=model.config.num_classes,
            modules=network_modules(model),
            layers=spatial_layers(model),
            labels=load_labels(model.config),
        )
        # Switched only once nothing can fail: a load that raises leaves the network as it was,
        # which is what the window goes on showing.
        self._use(model)
        self.info = info
        return info

    def load_first(self, sources: list[str]) -> WeightsInfo:
        """Load the first of ``sources`` that loads, else a randomly initialised network.

        Used at startup, where a missing or broken file must not stop the app from opening.
        """
        notes = []
        for source in sources:
            try:
                info = self.load_weights(source)
            except InceptionError as error:
                notes.append(str(error))
                continue
            info.notes = notes
            return info
        info = self.load_weights(None)
        info.notes = notes
        return info

    def _use(self, model: InceptionV3) -> None:
        self.model = model
        # The plain network, not the fast inference path: Grad-CAM differentiates this model,
        # the aux head's maps and the network view read its modules, and the analysis asks for
        # every tap, which the fast path computes eagerly on one stream (only the folding and
        # fusion count: measured 10% of a 299-pixel pass on the CPU). A fast copy beside it
        # would hold a second set of weights (about 100 MB in float32) for that.
        self.predictor = Predictor(model, top_k=5, batch_size=1, fast=False)
        self._input = self._taps = self._request = None

    # --- one image ----------------------------------------------------------------------------

    def analyse(self, request: int, source: Any, name: str | None = None) -> Analysis:
        """Decode ``source`` (path, bytes, PIL image, array), classify it and keep every tap.

        Raises ``ImageError`` for anything that is not a readable image.
        """
        if self.model is None or self.info is None:
            raise ValueError("no network loaded yet")
        start = time.perf_counter()
        original = load_image(source)
        preprocessing = self.model.config.preprocessing
        crop = np.asarray(center_crop(original, preprocessing), dtype=np.uint8)
        inputs = normalize(crop, preprocessing)[None]
        if not self.info.pretrained:
            # A random network has no BatchNorm statistics of its own: measured on this image
            # (and its mirror, so that the aux head's 1x1 maps have a variance), its layers keep
            # a trained network's scale and its predictions spread over the classes.
            calibrate_batchnorm(self.model, np.concatenate([inputs, inputs[:, :, ::-1]]))
        prediction = self.predictor.predict(original, taps=True)[0]
        if prediction.error:
            raise ImageError(prediction.error)
        taps = dict(prediction.taps)
        notes = []
        if "AuxLogits" in self.model:
            try:
                inner = aux_head_taps(self.model, mx.array(taps["Mixed_6e"][None]))
                mx.eval(inner)
                taps.update({key: np.asarray(value[0].astype(mx.float32))
                             for key, value in inner.items()})
            except ValueError as error:
                notes.append(str(error))
        aux_top_k = None
        if "AuxLogits" in taps:
            aux_logits = taps["AuxLogits"].astype(np.float64)
            aux_probabilities = np.exp(aux_logits - aux_logits.max())
            aux_top_k = top_k_of(aux_probabilities / aux_probabilities.sum(), 5, self.info.labels)
        numpy_taps, probabilities_np = taps, prediction.probabilities
        self._input, self._taps, self._request = inputs, numpy_taps, request
        path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        return Analysis(
            request=request,
            name=name or (Path(path).name if path else describe(source)),
            original_size=original.size,
            crop_region=crop_region(original.size, preprocessing),
            preview=preview(original),
            crop=crop,
            probabilities=probabilities_np,
            top_k=prediction.top_k,
            taps=numpy_taps,
            aux_top_k=aux_top_k,
            seconds=time.perf_counter() - start,
            path=path,
            notes=notes,
        )

    def grad_cam(
        self, request: int, class_index: int | None, layer: str = DEFAULT_LAYER
    ) -> GradCamResult:
        """Return the Grad-CAM of the last analysed image (which must be ``request``)."""
        if self.model is None or self._taps is None or self._request != request:
            raise ValueError("the image this Grad-CAM was asked for is no longer loaded")
        start = time.perf_counter()
        # Hand back the recorded activations so only the layers after ``layer`` run again.
        taps = {key: mx.array(value[None]) for key, value in self._taps.items()
                if key in (layer, "fc") or "." not in key}
        result = grad_cam(self.model, self._input, class_index, layer, taps=taps)
        labels = self.info.labels if self.info else None
        label = labels[result.class_index] if labels else f"class {result.class_index}"
        return GradCamResult(
            request=request,
            layer=layer,
            class_index=result.class_index,
            label=label,
            heatmap=result.heatmap,
            score=result.score,
            peak=result.peak,
            seconds=time.perf_counter() - start,
        )

    def close(self) -> None:
        """Drop every MLX array (call from the worker thread before it ends)."""
        self.model = self.predictor = None
        self._input = self._taps = None
