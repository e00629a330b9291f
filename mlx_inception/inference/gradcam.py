"""Grad-CAM (Selvaraju et al. 2017) at any Inception module or single branch, with MLX autodiff.

For a class c and an activation A (H x W x K) of the chosen layer, Grad-CAM weighs each channel by
the spatial mean of dy_c/dA_k and keeps the positive part of the weighted sum:
``cam = ReLU(sum_k alpha_k A_k)``, ``alpha_k = mean_ij dy_c/dA_k(i, j)``, where y_c is the class
*logit* (before the softmax, as in the paper). The gradient is taken with respect to the
activation itself by handing it back to the network through
``model.forward_with_taps(x, replace={layer: A})``.

At ``Mixed_7c`` (followed only by global average pooling and the classifier) Grad-CAM equals the
Class Activation Map of Zhou et al. 2016: ``alpha_k = W[c, k] / (H W)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..model import InceptionV3, tap_names

DEFAULT_LAYER = "Mixed_7c"

# Taps that are not spatial maps: Grad-CAM is undefined there.
_NOT_SPATIAL = ("AuxLogits", "avgpool", "fc")


@dataclass
class GradCam:
    """One image's Grad-CAM: ``heatmap`` (h, w) in [0, 1] on the layer's own grid."""

    heatmap: np.ndarray
    layer: str
    class_index: int
    # The class logit y_c the gradient was taken of.
    score: float
    # max of ReLU(sum_k alpha_k A_k) before scaling to [0, 1]; 0 means no positive evidence.
    peak: float
    # alpha_k, one per channel of the layer (the channel weights of the map).
    channel_weights: np.ndarray


def spatial_layers(model: InceptionV3) -> list[str]:
    """Return the tap names Grad-CAM can use (every stem module, Mixed_* module and branch)."""
    return [name for name in tap_names(model.config) if name not in _NOT_SPATIAL]


def _module_input(layer: str, names: list[str]) -> str | None:
    """Return the tap that feeds ``layer``'s module (None when that is the network input)."""
    module = layer.split(".")[0]
    top_level = [n for n in names if "." not in n and n not in _NOT_SPATIAL]
    position = top_level.index(module)
    return top_level[position - 1] if position > 0 else None


def _check_layer(model: InceptionV3, layer: str) -> None:
    if layer in _NOT_SPATIAL:
        raise ValueError(f"Grad-CAM needs a spatial activation, and {layer!r} is not one")
    if layer not in tap_names(model.config):
        raise ValueError(
            f"unknown layer {layer!r}: use a module such as 'Mixed_7c' or a branch such as "
            "'Mixed_6b.branch7x7' (see mlx_inception.tap_names())"
        )


def grad_cams(
    model: InceptionV3,
    images: mx.array | np.ndarray,
    class_indices: Sequence[int] | None = None,
    layer: str = DEFAULT_LAYER,
    taps: dict[str, mx.array] | None = None,
) -> list[GradCam]:
    """Return one Grad-CAM per image of a preprocessed NHWC batch.

    ``class_indices``: the class each map explains; None takes each image's top-1 class.
    ``layer``: a module (``"Mixed_7c"``, ``"Conv2d_4a_3x3"``) or a single branch
    (``"Mixed_6b.branch7x7dbl"``). ``taps``: activations of ``model.forward_with_taps(images)``
    the caller already has, with the batch axis (at least ``layer`` and ``fc``; with the output
    of the module before ``layer`` too, the layers before it never run again). The model must
    be in eval
    mode (a training-mode forward would update BatchNorm statistics and draw dropout masks).
    """
    if model.training:
        raise ValueError("Grad-CAM needs an eval-mode model: call model.eval() first")
    _check_layer(model, layer)
    images = mx.array(images) if isinstance(images, np.ndarray) else images
    if images.ndim == 3:
        images = images[None]
    if taps is None or layer not in taps or "fc" not in taps:
        logits, taps = model.forward_with_taps(images)
    else:
        logits = taps["fc"]
    batch, num_classes = logits.shape
    if class_indices is None:
        class_indices = np.asarray(mx.argmax(logits, axis=-1)).tolist()
    class_indices = [int(c) for c in class_indices]
    if len(class_indices) != batch:
        raise ValueError(f"{len(class_indices)} class indices for a batch of {batch} images")
    for c in class_indices:
        if not 0 <= c < num_classes:
            raise ValueError(f"class index {c} is outside 0..{num_classes - 1}")

    activation = taps[layer]
    # Everything upstream of the layer's module is held fixed at its recorded value, so the
    # backward (and the repeated forward inside mx.grad) only covers the layers that follow.
    frozen = {}
    feeding = _module_input(layer, tap_names(model.config))
    if feeding is not None and feeding in taps:
        frozen[feeding] = mx.stop_gradient(taps[feeding])
    rows = mx.arange(batch)
    targets = mx.array(class_indices)

    def class_scores(a: mx.array) -> mx.array:
        out, _ = model.forward_with_taps(images, replace={**frozen, layer: a})
        # Samples are independent in eval mode, so the gradient of the sum gives each image
        # the gradient of its own class score.
        return out[rows, targets].sum()

    gradients = mx.grad(class_scores)(activation)
    activation32 = activation.astype(mx.float32)
    alphas = gradients.astype(mx.float32).mean(axis=(1, 2))  # (N, K)
    cams = mx.maximum((activation32 * alphas[:, None, None, :]).sum(axis=-1), 0.0)  # (N, H, W)
    scores = logits[rows, targets]
    mx.eval(cams, alphas, scores)

    cams_np = np.asarray(cams, dtype=np.float32)
    alphas_np = np.asarray(alphas, dtype=np.float32)
    scores_np = np.asarray(scores.astype(mx.float32))
    results = []
    for i, class_index in enumerate(class_indices):
        cam = cams_np[i]
        peak = float(cam.max())
        heatmap = cam / peak if peak > 0 else np.zeros_like(cam)
        results.append(
            GradCam(
                heatmap=heatmap.astype(np.float32),
                layer=layer,
                class_index=class_index,
                score=float(scores_np[i]),
                peak=peak,
                channel_weights=alphas_np[i],
            )
        )
    return results


def grad_cam(
    model: InceptionV3,
    image: mx.array | np.ndarray,
    class_index: int | None = None,
    layer: str = DEFAULT_LAYER,
    taps: dict[str, mx.array] | None = None,
) -> GradCam:
    """Return the Grad-CAM of one preprocessed image (H, W, 3) or (1, H, W, 3).

    ``class_index`` None explains the top-1 class. See :func:`grad_cams`.
    """
    if image.ndim == 4 and image.shape[0] != 1:
        raise ValueError(
            f"grad_cam takes one image, got a batch of {image.shape[0]}: use grad_cams"
        )
    classes = None if class_index is None else [class_index]
    return grad_cams(model, image, classes, layer, taps)[0]


__all__ = ["DEFAULT_LAYER", "GradCam", "grad_cam", "grad_cams", "spatial_layers"]
