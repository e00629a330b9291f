"""Known pretrained weights: a name (``inception_v3.tv_in1k``) -> Hub repo, file and config.

The table lives in ``registry.json`` beside this module (package data) and is described in
``weights/README.md``. Each entry's ``config`` holds the :class:`InceptionV3Config` fields the
weights need (preprocessing, ``transform_input``, labels); ``num_classes`` and ``aux_logits`` are
read from the checkpoint itself when it is converted. A repo that is not registered takes its
config from timm's ``config.json`` (``pretrained_cfg``) when it has one.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..model import InceptionV3Config, Preprocessing

REGISTRY_FILE = Path(__file__).with_name("registry.json")

SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class WeightsEntry:
    """One set of pretrained weights: where it lives on the Hub and how to use it."""

    name: str
    repo_id: str
    filename: str
    revision: str = "main"
    # SHA-256 of ``filename`` at ``revision`` when it has been checked by hand; the Hub's own
    # LFS hash is verified on every download either way.
    sha256: str | None = None
    description: str = ""
    origin: str = ""
    license: str | None = None
    # What the weights' authors (or the project that ported them) report: top1, top5, dataset,
    # reported_by. Not measured here.
    accuracy: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def base_config(self) -> InceptionV3Config:
        """Return the config these weights need (num_classes/aux_logits come from the file)."""
        return InceptionV3Config.from_dict({**InceptionV3Config().to_dict(), **self.config})

    def source_info(self) -> dict[str, Any]:
        """Return what a converted directory records about this entry in ``config.source``."""
        info: dict[str, Any] = {"registry_name": self.name, "repo_id": self.repo_id}
        if self.license:
            info["license"] = self.license
        if self.accuracy:
            info["reported_accuracy"] = dict(self.accuracy)
        return info

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "repo_id": self.repo_id,
            "filename": self.filename,
            "revision": self.revision,
            "sha256": self.sha256,
            "description": self.description,
            "origin": self.origin,
            "license": self.license,
            "accuracy": self.accuracy,
            "config": self.config,
        }


@dataclass(frozen=True)
class Registry:
    """All known weights and the default name."""

    entries: dict[str, WeightsEntry]
    default: str

    def find(self, name: str) -> WeightsEntry | None:
        """Return the entry called ``name`` (case-insensitive), or None."""
        if name in self.entries:
            return self.entries[name]
        lowered = {key.lower(): entry for key, entry in self.entries.items()}
        return lowered.get(name.lower())

    def for_repo(self, repo_id: str) -> WeightsEntry | None:
        """Return the entry whose Hub repo is ``repo_id``, or None."""
        for entry in self.entries.values():
            if entry.repo_id.lower() == repo_id.lower():
                return entry
        return None

    def names(self) -> list[str]:
        """Return every registered name, the default first."""
        return [self.default] + sorted(name for name in self.entries if name != self.default)


def parse_registry(data: dict[str, Any]) -> Registry:
    """Return the registry described by ``data`` (the JSON layout), checking every entry."""
    entries = {}
    for name, raw in data["weights"].items():
        entry = WeightsEntry(name=name, **raw)
        if entry.sha256 is not None and not SHA256_PATTERN.fullmatch(entry.sha256):
            raise ValueError(f"registry entry {name}: sha256 must be 64 lowercase hex digits")
        if entry.repo_id.count("/") != 1:
            raise ValueError(f"registry entry {name}: repo_id must be owner/name")
        entry.base_config()  # raises on unknown config fields
        entries[name] = entry
    default = data["default"]
    if default not in entries:
        raise ValueError(f"registry default {default!r} is not one of its entries")
    return Registry(entries=entries, default=default)


@functools.lru_cache(maxsize=8)
def _read_registry(path: str) -> Registry:
    return parse_registry(json.loads(Path(path).read_text(encoding="utf-8")))


def load_registry(path: str | Path | None = None) -> Registry:
    """Return the registry read from ``path`` (the package's ``registry.json`` by default)."""
    return _read_registry(str(path or REGISTRY_FILE))


def find(name: str) -> WeightsEntry | None:
    """Return the registered weights called ``name``, or None."""
    return load_registry().find(name)


def for_repo(repo_id: str) -> WeightsEntry | None:
    """Return the registered weights hosted in Hub repo ``repo_id``, or None."""
    return load_registry().for_repo(repo_id)


def default_name() -> str:
    """Return the name of the default pretrained weights."""
    return load_registry().default


def names() -> list[str]:
    """Return every registered name, the default first."""
    return load_registry().names()


def config_from_timm(data: Any) -> InceptionV3Config:
    """Return the config that timm's ``config.json`` (its ``pretrained_cfg``) describes.

    Raises one CheckpointError line when a field is of the wrong type or out of range (an
    ``input_size`` of 100000 is refused here, before any image is resized to it).
    """
    try:
        return _config_from_timm(data)
    except (ValueError, TypeError, OverflowError) as error:
        raise CheckpointError(f"timm's config.json is not usable: {error}") from None


def _config_from_timm(data: Any) -> InceptionV3Config:
    config = InceptionV3Config()
    cfg = data.get("pretrained_cfg", {}) if isinstance(data, dict) else {}
    if not isinstance(cfg, dict):
        return config
    crop = config.preprocessing.crop_size
    input_size = cfg.get("input_size")
    if isinstance(input_size, list | tuple) and len(input_size) == 3:
        crop = input_size[-1]
    resize = config.preprocessing.resize_size
    crop_pct = cfg.get("crop_pct")
    if isinstance(crop_pct, int | float) and 0 < crop_pct <= 1 and isinstance(crop, int):
        resize = int(crop / crop_pct)  # timm's eval transform: floor(size / crop_pct)
    config.preprocessing = Preprocessing(
        resize_size=resize,
        crop_size=crop,
        interpolation=cfg.get("interpolation", config.preprocessing.interpolation),
        mean=cfg.get("mean", config.preprocessing.mean),
        std=cfg.get("std", config.preprocessing.std),
    )
    label_names = data.get("label_names")
    if isinstance(label_names, list) and all(isinstance(name, str) for name in label_names):
        config.labels = list(label_names)
    return config


def base_config(entry: WeightsEntry | None, timm_config: Any = None) -> InceptionV3Config:
    """Return the config to convert with: the registry's, else timm's config.json, else defaults."""
    if entry is not None:
        return entry.base_config()
    if isinstance(timm_config, dict) and "pretrained_cfg" in timm_config:
        return config_from_timm(timm_config)
    return InceptionV3Config()


__all__ = [
    "REGISTRY_FILE",
    "Registry",
    "WeightsEntry",
    "base_config",
    "config_from_timm",
    "default_name",
    "find",
    "for_repo",
    "load_registry",
    "names",
    "parse_registry",
]
