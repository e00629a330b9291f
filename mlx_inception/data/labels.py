"""Class names: ImageNet-1k's shipped as package data, or a list a config carries."""

from __future__ import annotations

import functools
from importlib import resources

from ..errors import DataError
from ..model import InceptionV3Config

# Label sets shipped with the package: name -> file in mlx_inception/data/.
# imagenet_classes.txt is torchvision's ``Inception_V3_Weights.IMAGENET1K_V1.meta["categories"]``,
# copied once: the 1000 ImageNet-1k names in the networks' output order.
LABEL_SETS = {"imagenet-1k": "imagenet_classes.txt"}
# The 1000 ImageNet-1k WordNet ids (the folder names of the ILSVRC-2012 train/val trees) in the
# same order: sorted, which is the order every ImageNet-trained network's outputs follow.
IMAGENET_SYNSETS_FILE = "imagenet_synsets.txt"


@functools.cache
def _read_lines(file_name: str) -> tuple[str, ...]:
    text = resources.files(__package__).joinpath(file_name).read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def _read_label_set(name: str) -> tuple[str, ...]:
    return _read_lines(LABEL_SETS[name])


def imagenet_classes() -> list[str]:
    """Return the 1000 ImageNet-1k class names in output order ("tench", "goldfish", ...)."""
    return list(_read_label_set("imagenet-1k"))


def imagenet_synsets() -> list[str]:
    """Return the 1000 ImageNet-1k WordNet ids in output order ("n01440764", ...)."""
    return list(_read_lines(IMAGENET_SYNSETS_FILE))


def load_labels(
    config_or_labels: InceptionV3Config | str | list[str] | tuple[str, ...] | None,
) -> list[str] | None:
    """Return the class names for a config, a label-set name or a list; None if there are none.

    ``"imagenet-1k"`` gives the 1000 names shipped with the package; a list is returned as is.
    For a config, names whose count differs from ``num_classes`` (a fine-tuned head that kept
    the default label set) are not used: None, so outputs are shown by index, never mislabelled.
    """
    if isinstance(config_or_labels, InceptionV3Config):
        labels = load_labels(config_or_labels.labels)
        if labels is not None and len(labels) != config_or_labels.num_classes:
            return None
        return labels
    if config_or_labels is None:
        return None
    if isinstance(config_or_labels, str):
        if config_or_labels not in LABEL_SETS:
            raise DataError(
                f"unknown label set {config_or_labels!r}; use one of {', '.join(LABEL_SETS)} "
                "or a list of class names"
            )
        return list(_read_label_set(config_or_labels))
    return list(config_or_labels)
