"""Top-1 / top-5 accuracy of a model on a labelled image folder, single- or multi-crop.

Folder names are mapped to the network's outputs (``class_mapping``): ImageNet synset ids
(``n01440764``), output indices (``0`` .. ``999``), class names (``tench``,
``great_white_shark``), or, when none of these fits, the position in sorted order (the
convention for a network trained on that same folder tree).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.folder import ImageFolder
from ..data.labels import imagenet_synsets
from ..errors import DataError
from .predictor import Predictor

SYNSET_PATTERN = re.compile(r"n\d{8}")


def _normalise_name(name: str) -> str:
    # "Great_White-Shark" and "great white shark" name the same class.
    return re.sub(r"[\s_\-]+", " ", name).strip().casefold()


def class_mapping(
    classes: list[str], num_classes: int, labels: list[str] | None
) -> tuple[dict[str, int], str]:
    """Return folder name -> output index for ``classes``, and how it was decided.

    In order: ImageNet synset ids (for a 1000-class network), output indices, class names
    (case, spaces, ``_`` and ``-`` ignored), then position in sorted order when there are
    exactly ``num_classes`` folders. Raises ``DataError`` naming the folders that do not fit.
    """
    if all(SYNSET_PATTERN.fullmatch(name) for name in classes):
        if num_classes != 1000:
            raise DataError(
                f"class folders are ImageNet synset ids but the model has {num_classes} "
                "outputs, not ImageNet-1k's 1000"
            )
        index = {synset: i for i, synset in enumerate(imagenet_synsets())}
        unknown = [name for name in classes if name not in index]
        if unknown:
            raise DataError(
                f"{len(unknown)} class folder(s) are not ImageNet-1k synsets: "
                f"{', '.join(unknown[:5])}"
            )
        return {name: index[name] for name in classes}, "ImageNet synset ids"
    if all(name.isdigit() for name in classes):
        out_of_range = [name for name in classes if int(name) >= num_classes]
        if out_of_range:
            raise DataError(
                f"class folder(s) {', '.join(out_of_range[:5])} are not output indices of a "
                f"{num_classes}-class model (0 to {num_classes - 1})"
            )
        return {name: int(name) for name in classes}, "output indices"
    if labels is not None:
        by_name: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            by_name.setdefault(_normalise_name(label), []).append(i)
        matched = {name: by_name.get(_normalise_name(name), []) for name in classes}
        if all(matched.values()):
            ambiguous = [name for name, found in matched.items() if len(found) > 1]
            if ambiguous:
                raise DataError(
                    f"class name(s) {', '.join(ambiguous)} name more than one output; rename "
                    "those folders by synset id or output index"
                )
            return {name: found[0] for name, found in matched.items()}, "class names"
    if len(classes) == num_classes:
        return {name: i for i, name in enumerate(classes)}, "sorted folder order"
    raise DataError(
        f"cannot map {len(classes)} class folders to the model's {num_classes} outputs; name "
        "them by ImageNet synset id (n01440764), output index (0) or class name (tench)"
    )


@dataclass
class Evaluation:
    """Accuracy over the readable images of a folder; unreadable ones listed in ``failed``."""

    top1_correct: int = 0
    top5_correct: int = 0
    count: int = 0
    crops: int = 1
    mapping: str = ""
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def top1(self) -> float | None:
        """Top-1 accuracy as a fraction (None when no image was evaluated: there is none)."""
        return self.top1_correct / self.count if self.count else None

    @property
    def top5(self) -> float | None:
        """Top-5 accuracy as a fraction (None when no image was evaluated: there is none)."""
        return self.top5_correct / self.count if self.count else None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form: ``{"top1", "top5", "count", ...}`` (accuracies null when
        ``count`` is 0)."""
        return {
            "top1": self.top1,
            "top5": self.top5,
            "count": self.count,
            "top1_correct": self.top1_correct,
            "top5_correct": self.top5_correct,
            "crops": self.crops,
            "class_mapping": self.mapping,
            "failed": [{"path": path, "error": error} for path, error in self.failed],
        }


def evaluate(
    predictor: Predictor,
    folder: ImageFolder,
    mapping: str = "",
    on_progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Return top-1/top-5 accuracy of ``predictor`` on ``folder`` (its samples' indices).

    A sample counts as top-k correct when its class is among the k most probable outputs of
    the (crop-averaged) softmax. Unreadable files are skipped and listed, never counted.
    ``on_progress(done, total)`` is called after each image. The network runs as ``predictor``
    runs it: the fast inference path by default, the plain model with
    ``Predictor(model, fast=False)``.
    """
    result = Evaluation(crops=predictor.crops, mapping=mapping)
    paths = [path for path, _ in folder.samples]
    targets = [target for _, target in folder.samples]
    for done, (prediction, target) in enumerate(
        zip(predictor.iter_predict(paths), targets, strict=True), start=1
    ):
        if prediction.error is not None:
            result.failed.append((prediction.source, prediction.error))
        else:
            top5 = np.argsort(-prediction.probabilities, kind="stable")[:5]
            result.count += 1
            result.top1_correct += int(top5[0] == target)
            result.top5_correct += int(target in top5)
        if on_progress is not None:
            on_progress(done, len(paths))
    return result
