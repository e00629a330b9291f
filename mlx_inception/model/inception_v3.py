"""Inception-v3 (Szegedy et al. 2015) assembled as torchvision builds it, in pure MLX, NHWC."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .blocks import (
    InceptionA,
    InceptionAux,
    InceptionB,
    InceptionC,
    InceptionD,
    InceptionE,
    Taps,
)
from .layers import BasicConv2d, global_average_pool, max_pool

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocessing:
    """How an image becomes the network's input; saved with the weights.

    torchvision's Inception-v3 transform by default: shorter side to 342 (bilinear, antialiased),
    centre crop 299, ImageNet mean/std.
    """

    resize_size: int = 342
    crop_size: int = 299
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)


@dataclass
class InceptionV3Config:
    """Everything needed to rebuild a network and feed it; ``config.json`` next to the weights."""

    num_classes: int = 1000
    aux_logits: bool = True
    # torchvision's transform_input: re-normalise ImageNet mean/std input to (x - 0.5) / 0.5,
    # which Google's ported weights expect. On for torchvision's pretrained checkpoint.
    transform_input: bool = False
    dropout: float = 0.5
    # False gives TensorFlow's "SAME" average pooling (padded zeros not counted).
    pool_count_include_pad: bool = True
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    # Name of a label set shipped with the package ("imagenet-1k"), an explicit list, or None.
    labels: str | list[str] | None = "imagenet-1k"
    # Where the weights came from: file name, sha256, registry name, ... (informational).
    source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocessing"]["mean"] = list(self.preprocessing.mean)
        data["preprocessing"]["std"] = list(self.preprocessing.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InceptionV3Config:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        values = dict(data)
        if isinstance(values.get("preprocessing"), dict):
            values["preprocessing"] = Preprocessing(**values["preprocessing"])
        return cls(**values)


# The modules of the network in the order data flows through them (torchvision's names).
STEM = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1",
    "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2",
)
MIXED = (
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
)
BRANCHES = {
    "InceptionA": ("branch1x1", "branch5x5", "branch3x3dbl", "branch_pool"),
    "InceptionB": ("branch3x3", "branch3x3dbl", "branch_pool"),
    "InceptionC": ("branch1x1", "branch7x7", "branch7x7dbl", "branch_pool"),
    "InceptionD": ("branch3x3", "branch7x7x3", "branch_pool"),
    "InceptionE": ("branch1x1", "branch3x3", "branch3x3dbl", "branch_pool"),
}


class InceptionV3(nn.Module):
    """Inception-v3 as in torchvision: input (N, H, W, 3), at least 75x75; logits (N, classes).

    In training mode with the auxiliary head it returns ``(logits, aux_logits)``; in eval mode,
    logits only. MLX modules start in training mode: call ``model.eval()`` for inference
    (``mlx_inception.load`` does).
    """

    def __init__(self, config: InceptionV3Config | None = None, init_weights: bool = True):
        super().__init__()
        config = config or InceptionV3Config()
        self.config = config
        pad = config.pool_count_include_pad
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32, pool_count_include_pad=pad)
        self.Mixed_5c = InceptionA(256, pool_features=64, pool_count_include_pad=pad)
        self.Mixed_5d = InceptionA(288, pool_features=64, pool_count_include_pad=pad)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128, pool_count_include_pad=pad)
        self.Mixed_6c = InceptionC(768, channels_7x7=160, pool_count_include_pad=pad)
        self.Mixed_6d = InceptionC(768, channels_7x7=160, pool_count_include_pad=pad)
        self.Mixed_6e = InceptionC(768, channels_7x7=192, pool_count_include_pad=pad)
        if config.aux_logits:
            self.AuxLogits = InceptionAux(768, config.num_classes)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool_count_include_pad=pad)
        self.Mixed_7c = InceptionE(2048, pool_count_include_pad=pad)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(2048, config.num_classes)
        if init_weights:
            self.init_weights()

    def init_weights(self) -> None:
        """Re-draw weights as torchvision's ``init_weights=True`` does.

        Conv and linear weights ~ truncated normal(0, stddev) cut at the absolute values -2 and 2
        (stddev 0.1; 0.001 for the aux fc); BatchNorm weight 1, bias 0.
        Linear biases keep their default uniform init, as in torchvision.
        """

        def truncated(shape: tuple[int, ...], stddev: float) -> mx.array:
            bound = 2.0 / stddev
            return mx.random.truncated_normal(-bound, bound, shape) * stddev

        for _, module in self.named_modules():
            if isinstance(module, BasicConv2d):
                module.conv.weight = truncated(module.conv.weight.shape, module.stddev)
                module.bn.weight = mx.ones_like(module.bn.weight)
                module.bn.bias = mx.zeros_like(module.bn.bias)
        self.fc.weight = truncated(self.fc.weight.shape, 0.1)
        if "AuxLogits" in self:
            self.AuxLogits.fc.weight = truncated(
                self.AuxLogits.fc.weight.shape, self.AuxLogits.fc_stddev
            )

    def _transform_input(self, x: mx.array) -> mx.array:
        mean = mx.array(IMAGENET_MEAN, dtype=x.dtype)
        std = mx.array(IMAGENET_STD, dtype=x.dtype)
        return x * (std / 0.5) + (mean - 0.5) / 0.5

    def __call__(self, x: mx.array) -> mx.array | tuple[mx.array, mx.array]:
        logits, aux, _ = self._forward(x, None, None)
        if aux is not None:
            return logits, aux
        return logits

    def forward_with_taps(
        self, x: mx.array, replace: Taps | None = None
    ) -> tuple[mx.array | tuple[mx.array, mx.array], Taps]:
        """Return the usual output and every named activation of the same forward pass.

        Keys: each stem module (``Conv2d_1a_3x3`` .. ``maxpool2``), each Inception module
        (``Mixed_5b`` ..) and each of its branches (``Mixed_5b.branch3x3dbl``,
        ``Mixed_6a.branch_pool``, ...), ``AuxLogits`` (when the head exists and the grid allows
        it, in eval mode too), ``avgpool`` (the 2048 pooled features) and ``fc`` (logits).
        ``replace`` maps any of these keys to an array used in place of that activation, so
        gradients can be taken with respect to it.
        """
        taps: Taps = {}
        logits, aux, _ = self._forward(x, taps, replace or {})
        return ((logits, aux) if aux is not None and self.training else logits), taps

    def _forward(self, x: mx.array, taps: Taps | None, replace: Taps | None):
        def record(name: str, value: mx.array) -> mx.array:
            if replace is not None and name in replace:
                value = replace[name]
            if taps is not None:
                taps[name] = value
            return value

        if self.config.transform_input:
            x = self._transform_input(x)
        for name in STEM:
            if name.startswith("maxpool"):
                x = max_pool(x, 3, 2)
            else:
                x = getattr(self, name)(x)
            x = record(name, x)
        aux = None
        for name in MIXED:
            x = record(name, getattr(self, name)(x, taps, replace, name))
            if name == "Mixed_6e" and "AuxLogits" in self:
                want_aux = self.training or (taps is not None and min(x.shape[1:3]) >= 17)
                if want_aux:
                    aux = record("AuxLogits", self.AuxLogits(x))
        x = record("avgpool", global_average_pool(x))
        x = self.dropout(x)
        logits = record("fc", self.fc(x))
        if not self.training:
            aux = None
        return logits, aux, taps


def tap_names(config: InceptionV3Config | None = None) -> list[str]:
    """Return the keys of :meth:`InceptionV3.forward_with_taps`, in the order data flows."""
    config = config or InceptionV3Config()
    kinds = ["InceptionA"] * 3 + ["InceptionB"] + ["InceptionC"] * 4 + ["InceptionD"]
    kinds += ["InceptionE"] * 2
    names = list(STEM)
    for module, kind in zip(MIXED, kinds, strict=True):
        names.append(module)
        names.extend(f"{module}.{branch}" for branch in BRANCHES[kind])
        if module == "Mixed_6e" and config.aux_logits:
            names.append("AuxLogits")
    return names + ["avgpool", "fc"]
