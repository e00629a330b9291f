"""Inception-v3 (Szegedy et al. 2015) assembled as torchvision builds it, in pure MLX, NHWC."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .blocks import InceptionA, InceptionAux, InceptionB, InceptionC, InceptionD, InceptionE
from .layers import BasicConv2d, MaxPool2d, global_average_pool

# Activations by name: what ``forward_with_taps`` records and what ``replace`` substitutes.
Taps = dict[str, mx.array]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# Bounds on what a config may claim, checked before anything is built from it: a side of
# 2048 already makes a 2048x2048 input (about 40 GB of float32 activations in training); a
# head of 100,000 classes is a 0.8 GB fc layer (ImageNet-21k has 21,843).
MAX_IMAGE_SIDE = 2048
MAX_CLASSES = 100_000
MAX_LABEL_LENGTH = 1000
# The interpolations data.transforms knows (torchvision's and timm's names for Pillow's filters).
INTERPOLATION_NAMES = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _three_floats(name: str, value: Any) -> tuple[float, float, float]:
    if not isinstance(value, str | bytes | dict) and hasattr(value, "__len__"):
        value = tuple(value)  # a list from JSON, a tuple or a numpy array
    _require(
        isinstance(value, tuple) and len(value) == 3 and all(map(_is_number, value)),
        f"preprocessing {name} must be 3 numbers (one per RGB channel), not {_short(value)}",
    )
    numbers = tuple(float(v) for v in value)
    _require(all(math.isfinite(v) for v in numbers), f"preprocessing {name} must be finite")
    return numbers


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
        """Check every field's type and range (ValueError, one line)."""
        for name in ("resize_size", "crop_size"):
            value = getattr(self, name)
            _require(
                _is_int(value) and 1 <= value <= MAX_IMAGE_SIDE,
                f"preprocessing {name} must be a whole number of pixels from 1 to "
                f"{MAX_IMAGE_SIDE}, not {_short(value)}",
            )
            setattr(self, name, int(value))
        _require(
            isinstance(self.interpolation, str)
            and self.interpolation.lower() in INTERPOLATION_NAMES,
            f"unknown preprocessing interpolation {_short(self.interpolation)}: choose one of "
            f"{', '.join(INTERPOLATION_NAMES)}",
        )
        self.mean = _three_floats("mean", self.mean)
        self.std = _three_floats("std", self.std)
        _require(all(v > 0 for v in self.std), "preprocessing std must be positive")


# Section 9, Table 2: for each input size, the stride of the first layer (Conv2d_1a_3x3) and
# whether the stem keeps its first max-pool (``maxpool1``). The 299 and 151 networks have the
# same grid sizes from the first layer's output on (149, 147, 73, ..., 35, 17, 8); the 79 network
# reaches 75, 73 and then 36, 17, 8. The paper's "pooling after the first layer" is this stem
# max-pool: torchvision's stem (like Google's) has no pool directly after Conv2d_1a_3x3.
STEM_VARIANTS = {"299": (2, True), "151": (1, True), "79": (1, False)}


@dataclass
class InceptionV3Config:
    """Everything needed to rebuild a network and feed it; ``config.json`` next to the weights."""

    num_classes: int = 1000
    aux_logits: bool = True
    # torchvision's transform_input: re-normalise ImageNet mean/std input to (x - 0.5) / 0.5,
    # which Google's ported weights expect. On for torchvision's pretrained checkpoint.
    transform_input: bool = False
    dropout: float = 0.5
    # False gives TensorFlow's "SAME" average pooling (padded zeros not counted), which
    # TF-derived weights and the FID network (pytorch-fid's FIDInceptionA/C/E) expect.
    pool_count_include_pad: bool = True
    # The paper's "BN-auxiliary" (section 10, Table 3's last row): BatchNorm on the output of the
    # aux classifier's fully connected layer. Not in torchvision or TF-slim.
    bn_aux: bool = False
    # The paper's equal-cost networks for low resolution (section 9, Table 2), named by input
    # size: "299" (torchvision: first layer stride 2, max-pool after the stem's third layer),
    # "151" (first layer stride 1, max-pool kept), "79" (first layer stride 1, no max-pool).
    # All three have the same parameters, so weights move between them.
    stem: str = "299"
    # Mixed_7c's pooling branch: "avg" (the paper, torchvision) or "max" (Google's 2015 graph,
    # the FID network: pytorch-fid's FIDInceptionE_2).
    mixed_7c_pool: str = "avg"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    # Name of a label set shipped with the package ("imagenet-1k"), an explicit list, or None.
    labels: str | list[str] | None = "imagenet-1k"
    # Where the weights came from: file name, sha256, registry name, ... (informational).
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check every field's type and range (ValueError, one line): configs come from files."""
        _require(
            _is_int(self.num_classes) and 1 <= self.num_classes <= MAX_CLASSES,
            f"num_classes must be a whole number from 1 to {MAX_CLASSES:,}, not "
            f"{_short(self.num_classes)}",
        )
        self.num_classes = int(self.num_classes)
        for name in ("aux_logits", "transform_input", "pool_count_include_pad", "bn_aux"):
            _require(isinstance(getattr(self, name), bool),
                     f"{name} must be true or false, not {_short(getattr(self, name))}")
        _require(
            _is_number(self.dropout) and 0 <= self.dropout < 1,
            f"dropout must be a number from 0 up to (not including) 1, not {_short(self.dropout)}",
        )
        self.dropout = float(self.dropout)
        # stem=151 reads as naturally as stem="151"
        if _is_int(self.stem):
            self.stem = str(self.stem)
        _require(
            isinstance(self.stem, str) and self.stem in STEM_VARIANTS,
            f"unknown stem {_short(self.stem)}: choose one of {', '.join(STEM_VARIANTS)}",
        )
        _require(self.mixed_7c_pool in ("avg", "max"),
                 f"unknown mixed_7c_pool {_short(self.mixed_7c_pool)}: choose avg or max")
        _require(isinstance(self.preprocessing, Preprocessing),
                 f"preprocessing must be an object of sizes, not {_short(self.preprocessing)}")
        smallest = minimum_input_size(self)
        _require(
            self.preprocessing.crop_size >= smallest,
            f"preprocessing crop_size {self.preprocessing.crop_size} is smaller than this "
            f"network's smallest input ({smallest} pixels for stem {self.stem!r})",
        )
        self._check_labels()
        _require(isinstance(self.source, dict),
                 f"source must be an object, not {_short(self.source)}")

    def _check_labels(self) -> None:
        labels = self.labels
        if labels is None or isinstance(labels, str):
            _require(labels is None or 0 < len(labels) <= MAX_LABEL_LENGTH,
                     f"labels must name a label set, not {_short(labels)}")
            return
        _require(isinstance(labels, list | tuple),
                 f"labels must be null, a label set's name or a list of names, not "
                 f"{_short(labels)}")
        _require(
            len(labels) == self.num_classes,
            f"labels lists {len(labels)} names for {self.num_classes} classes",
        )
        _require(
            all(isinstance(name, str) and len(name) <= MAX_LABEL_LENGTH for name in labels),
            f"labels must be strings of at most {MAX_LABEL_LENGTH} characters",
        )
        self.labels = list(labels)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocessing"]["mean"] = list(self.preprocessing.mean)
        data["preprocessing"]["std"] = list(self.preprocessing.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InceptionV3Config:
        """Return the config ``data`` (parsed JSON) describes; ValueError, one line, if none."""
        _require(isinstance(data, dict), f"a config must be an object, not {_short(data)}")
        _check_names("config", data, cls)
        values = dict(data)
        if isinstance(values.get("preprocessing"), dict):
            _check_names("preprocessing", values["preprocessing"], Preprocessing)
            values["preprocessing"] = Preprocessing(**values["preprocessing"])
        return cls(**values)


def _check_names(what: str, data: dict[str, Any], kind: type) -> None:
    """Raise ValueError naming the keys of ``data`` that are not fields of ``kind``."""
    known = {f.name for f in fields(kind)}
    unknown = ", ".join(sorted(map(str, set(data) - known)))
    _require(not unknown, f"unknown {what} fields: {unknown[:200]}")


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

    The config's variants (``stem``, ``bn_aux``, ``pool_count_include_pad``, ``mixed_7c_pool``)
    build the paper's other networks with the same parameter names; the smallest input then is
    :func:`minimum_input_size`. In training mode with the auxiliary head it returns
    ``(logits, aux_logits)``; in eval mode, logits only. MLX modules start in training mode:
    call ``model.eval()`` for inference (``mlx_inception.load`` does).
    """

    def __init__(self, config: InceptionV3Config | None = None, init_weights: bool = True):
        super().__init__()
        config = config or InceptionV3Config()
        self.config = config
        pad = config.pool_count_include_pad
        first_stride, _ = STEM_VARIANTS[config.stem]
        self._minimum_size = minimum_input_size(config)
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=first_stride)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        if "maxpool1" in self._stem_names():
            self.maxpool1 = MaxPool2d(3, 2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.maxpool2 = MaxPool2d(3, 2)
        self.Mixed_5b = InceptionA(192, pool_features=32, pool_count_include_pad=pad)
        self.Mixed_5c = InceptionA(256, pool_features=64, pool_count_include_pad=pad)
        self.Mixed_5d = InceptionA(288, pool_features=64, pool_count_include_pad=pad)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128, pool_count_include_pad=pad)
        self.Mixed_6c = InceptionC(768, channels_7x7=160, pool_count_include_pad=pad)
        self.Mixed_6d = InceptionC(768, channels_7x7=160, pool_count_include_pad=pad)
        self.Mixed_6e = InceptionC(768, channels_7x7=192, pool_count_include_pad=pad)
        if config.aux_logits:
            self.AuxLogits = InceptionAux(768, config.num_classes, batch_norm=config.bn_aux)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool_count_include_pad=pad)
        self.Mixed_7c = InceptionE(2048, pool_count_include_pad=pad, pool=config.mixed_7c_pool)
        self.dropout = nn.Dropout(config.dropout)
        self.fc = nn.Linear(2048, config.num_classes)
        if init_weights:
            self.init_weights()

    def init_weights(self) -> None:
        """Re-draw weights as torchvision's ``init_weights=True`` does.

        Conv and linear weights ~ truncated normal(0, stddev) cut at the absolute values -2 and 2
        (stddev 0.1; 0.001 for the aux fc); BatchNorm weight 1, bias 0.
        Linear biases keep their default uniform init, as in torchvision. With ``bn_aux`` the
        aux fc is drawn with 0.1 (see ``InceptionAux``) and its BatchNorm starts at 1 and 0.
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
            if "fc_bn" in self.AuxLogits:
                bn = self.AuxLogits.fc_bn
                bn.weight = mx.ones_like(bn.weight)
                bn.bias = mx.zeros_like(bn.bias)

    def _transform_input(self, x: mx.array) -> mx.array:
        mean = mx.array(IMAGENET_MEAN, dtype=x.dtype)
        std = mx.array(IMAGENET_STD, dtype=x.dtype)
        return x * (std / 0.5) + (mean - 0.5) / 0.5

    def __call__(self, x: mx.array) -> mx.array | tuple[mx.array, mx.array]:
        logits, aux = self._run(x)
        return logits if aux is None else (logits, aux)

    def features(self, x: mx.array, layer: str = "avgpool") -> mx.array:
        """Return the activation of ``layer`` for ``x``, computing no layer after it.

        ``layer``: ``"avgpool"`` (default: the (N, 2048) pooled features, TensorFlow's "pool3",
        which FID uses), a stem module (``"maxpool1"``, ``"maxpool2"``, ...) or an Inception
        module (``"Mixed_6e"``, ...). Dropout and fc are never applied; the aux head never runs.
        """
        names = [*self._stem_names(), *MIXED, "avgpool"]
        if layer not in names:
            raise ValueError(f"unknown layer {layer!r}: choose one of {', '.join(names)}")
        return self._run(x, stop_at=layer, with_aux=False)[0]

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
        logits, aux = self._run(x, taps, replace or {})
        return (logits if aux is None else (logits, aux)), taps

    def _stem_names(self) -> tuple[str, ...]:
        return _stem_names(self.config)

    def _run(
        self,
        x: mx.array,
        taps: Taps | None = None,
        replace: Taps | None = None,
        stop_at: str = "fc",
        with_aux: bool = True,
    ) -> tuple[mx.array, mx.array | None]:
        """Return the activation ``stop_at`` ("fc": the logits) and the aux logits (training
        mode only, else None), recording into ``taps`` and substituting from ``replace``."""

        def record(name: str, value: mx.array) -> mx.array:
            if replace is not None and name in replace:
                value = replace[name]
            if taps is not None:
                taps[name] = value
            return value

        if min(x.shape[1], x.shape[2]) < self._minimum_size:
            raise ValueError(
                f"input of {x.shape[1]}x{x.shape[2]} pixels is too small: this network (stem "
                f"{self.config.stem!r}) needs at least {self._minimum_size}x{self._minimum_size}"
            )
        if self.config.transform_input:
            x = self._transform_input(x)
        aux = None
        for name in self._stem_names():
            x = record(name, getattr(self, name)(x))
            if name == stop_at:
                return x, None
        for name in MIXED:
            branches = getattr(self, name).branches(x)
            for branch, value in branches.items():
                branches[branch] = record(f"{name}.{branch}", value)
            x = record(name, mx.concatenate(list(branches.values()), axis=-1))
            if name == "Mixed_6e" and "AuxLogits" in self and with_aux:
                # In eval mode the aux head runs only to be recorded, where its grid allows.
                if self.training or (taps is not None and min(x.shape[1:3]) >= 17):
                    aux = record("AuxLogits", self.AuxLogits(x))
            if name == stop_at:
                return x, None
        x = record("avgpool", global_average_pool(x))
        if stop_at == "avgpool":
            return x, None
        logits = record("fc", self.fc(self.dropout(x)))
        return logits, aux if self.training else None


def tap_names(config: InceptionV3Config | None = None) -> list[str]:
    """Return the keys of :meth:`InceptionV3.forward_with_taps`, in the order data flows."""
    config = config or InceptionV3Config()
    kinds = ["InceptionA"] * 3 + ["InceptionB"] + ["InceptionC"] * 4 + ["InceptionD"]
    kinds += ["InceptionE"] * 2
    names = list(_stem_names(config))
    for module, kind in zip(MIXED, kinds, strict=True):
        names.append(module)
        names.extend(f"{module}.{branch}" for branch in BRANCHES[kind])
        if module == "Mixed_6e" and config.aux_logits:
            names.append("AuxLogits")
    return names + ["avgpool", "fc"]


def _stem_names(config: InceptionV3Config) -> tuple[str, ...]:
    """Return the stem's modules in order; the "79" stem has no ``maxpool1``."""
    _, max_pool_kept = STEM_VARIANTS[config.stem]
    return STEM if max_pool_kept else tuple(name for name in STEM if name != "maxpool1")


def _grid_sizes(size: int, config: InceptionV3Config) -> tuple[int, int]:
    """Return the side of the 17x17 grid (Mixed_6e) and the 8x8 grid (Mixed_7c) for ``size``."""

    def valid_3x3(n: int, stride: int) -> int:
        return (n - 3) // stride + 1 if n >= 3 else 0

    first_stride, max_pool_kept = STEM_VARIANTS[config.stem]
    n = valid_3x3(size, first_stride)  # Conv2d_1a_3x3
    n = valid_3x3(n, 1)  # Conv2d_2a_3x3 (2b keeps the size)
    if max_pool_kept:
        n = valid_3x3(n, 2)  # maxpool1
    n = valid_3x3(valid_3x3(n, 1), 2)  # Conv2d_4a_3x3, maxpool2 (the 35x35 grid)
    grid_17 = valid_3x3(n, 2)  # Mixed_6a
    return grid_17, valid_3x3(grid_17, 2)  # Mixed_7a


def minimum_input_size(config: InceptionV3Config | None = None, aux: bool = False) -> int:
    """Return the smallest input side the network accepts; with ``aux``, that its aux head does.

    75 (299 with the aux head) for the default stem, 39 (151) for "151", 21 (77) for "79".
    """
    config = config or InceptionV3Config()
    size = 1
    while True:
        grid_17, grid_8 = _grid_sizes(size, config)
        if grid_8 >= 1 and (not aux or grid_17 >= 17):
            return size
        size += 1
