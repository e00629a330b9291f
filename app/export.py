"""Writing what the window shows to files: predictions as CSV or JSON, activations as .npz.

Every file is written under a temporary name beside its destination and renamed into place,
so an interrupted export never leaves half a file where a good one was.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from mlx_inception.atomic import write_atomically

from .session import Analysis, GradCamResult, WeightsInfo


def _label(labels: list[str] | None, index: int) -> str:
    return labels[index] if labels else ""


def predictions_rows(analysis: Analysis, labels: list[str] | None) -> list[dict[str, Any]]:
    """Return every class as {rank, index, label, probability}, most probable first."""
    order = np.argsort(-analysis.probabilities, kind="stable")
    return [
        {
            "rank": rank,
            "index": int(index),
            "label": _label(labels, int(index)),
            "probability": float(analysis.probabilities[index]),
        }
        for rank, index in enumerate(order, start=1)
    ]


def write_predictions_csv(
    path: str | os.PathLike, analysis: Analysis, labels: list[str] | None
) -> Path:
    """Write all classes, most probable first, as CSV (rank,index,label,probability)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["rank", "index", "label", "probability"],
                            lineterminator="\n")
    writer.writeheader()
    for row in predictions_rows(analysis, labels):
        writer.writerow({**row, "probability": f"{row['probability']:.8g}"})
    return write_atomically(path, lambda p: p.write_text(buffer.getvalue(), encoding="utf-8"))


def predictions_document(
    analysis: Analysis,
    info: WeightsInfo,
    grad_cam: GradCamResult | None = None,
) -> dict[str, Any]:
    """Return the JSON export: image, weights, top-5, aux head's top-5, all probabilities."""
    document: dict[str, Any] = {
        "image": analysis.name,
        "path": analysis.path,
        "weights": {
            "source": info.source,
            "description": info.description,
            "pretrained": info.pretrained,
        },
        "top_k": [entry.to_dict() for entry in analysis.top_k],
        "aux_top_k": [entry.to_dict() for entry in analysis.aux_top_k]
        if analysis.aux_top_k else None,
        "probabilities": [float(p) for p in analysis.probabilities],
    }
    if grad_cam is not None:
        document["grad_cam"] = {
            "layer": grad_cam.layer,
            "class_index": grad_cam.class_index,
            "label": grad_cam.label,
            "score": grad_cam.score,
        }
    return document


def write_predictions_json(
    path: str | os.PathLike,
    analysis: Analysis,
    info: WeightsInfo,
    grad_cam: GradCamResult | None = None,
) -> Path:
    """Write :func:`predictions_document` as indented JSON."""
    text = json.dumps(predictions_document(analysis, info, grad_cam), indent=2) + "\n"
    return write_atomically(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_activations_npz(
    path: str | os.PathLike,
    analysis: Analysis,
    keys: Iterable[str] | None = None,
    grad_cam: GradCamResult | None = None,
) -> Path:
    """Write activations (H, W, C) float32 under their tap names, the crop and probabilities.

    ``keys`` None writes every tap. The archive also holds ``input_crop`` (uint8, the pixels the
    network saw), ``probabilities`` and, when given, ``grad_cam`` (the heatmap) with
    ``grad_cam_layer`` and ``grad_cam_class``.
    """
    names = list(analysis.taps) if keys is None else list(keys)
    arrays: dict[str, np.ndarray] = {name: analysis.taps[name] for name in names}
    arrays["input_crop"] = analysis.crop
    arrays["probabilities"] = analysis.probabilities
    if grad_cam is not None:
        arrays["grad_cam"] = grad_cam.heatmap
        arrays["grad_cam_layer"] = np.array(grad_cam.layer)
        arrays["grad_cam_class"] = np.array(grad_cam.class_index)

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as file:
            np.savez_compressed(file, **arrays)

    return write_atomically(path, write)
