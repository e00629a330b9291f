"""The paper's training recipe and the fine-tuning recipe, in one place, each value cited.

``TrainConfig`` holds everything a run needs. Its defaults are the from-scratch recipe of
Szegedy et al. 2015, "Rethinking the Inception Architecture" (section numbers below refer to it),
filled in from Google's released TensorFlow code where the paper is silent; recipe "scratch"
takes TF-slim's single-machine learning rate (at most the paper's) and does not clip ("paper":
the paper exactly). ``FINE_TUNE`` lists the values that change when training starts from pretrained
weights (``init``). ``resolve`` gives the final configuration (``RUN_DIR/train_config.json``).

Sources:
  [paper]   the paper, section 7 (label smoothing) and section 8 (training methodology)
  [dist]    tensorflow/models research/inception/inception_distributed_train.py: the paper's
            setup (50 synchronous replicas x 32 images, RMSProp decay/momentum/epsilon,
            0.045 x 0.94 every 2 epochs, parameter averaging incl. BatchNorm statistics)
  [model]   research/inception/inception/inception_model.py: MOVING_AVERAGE_DECAY = 0.9999
  [slim]    research/slim/train_image_classifier.py: aux loss weight 0.4, label smoothing
            and moving-average flags, RMSProp flags
  [slimnet] research/slim/nets/inception_v3.py + inception_utils.py: L2 weight decay 4e-5 on
            conv and fully connected weights, BatchNorm decay 0.9997, dropout keep 0.8
  [slimpre] research/slim/preprocessing/inception_preprocessing.py: crop area 5%-100%,
            aspect ratio 3/4-4/3, random horizontal flip
  [flowers] research/slim/scripts/finetune_inception_v3_on_flowers.sh: fine-tuning
  [single]  single-machine scripts: slim/train_image_classifier.py (RMSProp, lr 0.01 at batch 32,
            no clipping), inception_train.py (0.1 at 32), torchvision's train.py (SGD 0.1 at 32)
  [precise] Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", section 3 (precise BN)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import mlx.core as mx

from ..errors import InceptionError
from ..jsonfile import read_json
from ..model import InceptionV3Config
from ..model.inception_v3 import STEM_VARIANTS, minimum_input_size


class ConfigError(InceptionError):
    """A training configuration that cannot be run (bad value, bad combination)."""


# The InceptionV3Config fields that choose one of the paper's variants. Unset (None), they come
# from the --init weights, or are torchvision's network when training from scratch.
ARCHITECTURE = ("stem", "bn_aux", "pool_count_include_pad", "mixed_7c_pool")
EVAL_RESIZE_RATIO = 342 / 299  # torchvision's evaluation resize for a 299 crop, kept at any size


def _cited(default: Any, source: str, help: str) -> Any:
    """A dataclass field whose metadata records where its default comes from."""
    metadata = {"source": source, "help": help}
    if isinstance(default, (list, dict)):  # a fresh copy each time
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything that defines a training run; the defaults are the paper's from-scratch recipe."""

    # --- what to train on, where to write -------------------------------------------------
    data: str = _cited("", "-", "training ImageFolder: one sub-folder of images per class")
    out: str = _cited("", "-", "run directory: checkpoints, metrics, curves, config")
    val: str | None = _cited(None, "-", "validation ImageFolder with the same class names")
    val_split: float = _cited(
        0.1, "ours", "fraction of each class held out for validation when no --val is given "
        "(0 = no validation)"
    )
    init: str | None = _cited(
        None, "-", "start from these weights (anything mlx_inception.load takes); "
        "switches to the fine-tuning recipe"
    )
    freeze: str = _cited(
        "none", "-", "'none', 'backbone' (train only fc and AuxLogits) or a module name: "
        "freeze everything up to and including it (e.g. Mixed_6e)"
    )

    # --- schedule and batch -------------------------------------------------------------------
    epochs: int = _cited(100, "[paper] 8: 100 epochs", "number of passes over the training set")
    max_steps: int | None = _cited(
        None, "-", "stop (with a resumable checkpoint) after this many optimizer steps in total; "
        "0: no limit (lifts a limit when resuming)"
    )
    batch_size: int = _cited(
        32, "[paper] 8: batch 32 per replica", "global batch: images per optimizer step, "
        "over all processes"
    )
    micro_batches: int = _cited(
        1, "ours", "split each process's share of the batch into this many BatchNorm groups "
        "whose gradients are averaged (gradient accumulation)"
    )
    image_size: int = _cited(299, "[paper] 6: 299x299 input", "training crop size in pixels")

    # --- the network: the paper's variants (default: as the --init weights, else torchvision's)
    stem: str | None = _cited(
        None, "[paper] 9, Table 2", "first layers for the input size: 299 (torchvision's), 151 "
        "(first layer stride 1, max-pool kept) or 79 (stride 1, no max-pool); default: the "
        "--init weights' stem, else 299"
    )
    bn_aux: bool | None = _cited(
        None, "[paper] 10, Table 3 (BN-auxiliary)", "BatchNorm on the aux classifier's fully "
        "connected layer; default: as the --init weights, else off"
    )
    pool_count_include_pad: bool | None = _cited(
        None, "-", "average pools count padded zeros (torchvision; off = TensorFlow's SAME "
        "pooling); default: as the --init weights, else on"
    )
    mixed_7c_pool: str | None = _cited(
        None, "-", "Mixed_7c's pooling branch: avg (the paper, torchvision) or max (Google's "
        "2015 graph, the FID network); default: as the --init weights, else avg"
    )

    # --- optimizer: TF's RMSProp ------------------------------------------------------------
    learning_rate: float | None = _cited(
        None, "rule", "learning rate; default (paper): base_learning_rate * batch_size / "
        "reference_batch; scratch: 0.01 * batch_size / 32 [single], at most the paper's, unscaled"
    )
    base_learning_rate: float = _cited(
        0.045, "[paper] 8, [dist] initial_learning_rate", "learning rate at reference_batch"
    )
    reference_batch: int = _cited(
        1600, "[dist] 50 replicas x 32, averaged by SyncReplicasOptimizer",
        "global batch that base_learning_rate was used with (linear scaling rule)"
    )
    lr_decay_rate: float = _cited(0.94, "[paper] 8, [dist]", "learning rate decay factor")
    lr_decay_epochs: float = _cited(
        2.0, "[paper] 8, [dist] num_epochs_per_decay", "epochs between decays (staircase; "
        "0 = constant learning rate)"
    )
    rmsprop_decay: float = _cited(0.9, "[paper] 8, [dist] RMSPROP_DECAY", "RMSProp decay")
    rmsprop_momentum: float = _cited(0.9, "[dist] RMSPROP_MOMENTUM, [slim]", "RMSProp momentum")
    rmsprop_epsilon: float = _cited(
        1.0, "[paper] 8, [dist] RMSPROP_EPSILON", "RMSProp epsilon (inside the square root)"
    )
    clip_norm: float = _cited(
        0.0, "[single]: none clips; the paper's 2.0 (section 8) is --recipe paper's",
        "clip the gradient's global norm to this (0 = off)"
    )
    weight_decay: float = _cited(
        4e-5, "[slimnet] weight_decay", "L2 penalty (wd/2)*|w|^2 on conv and fc weights (not "
        "BatchNorm, not biases)"
    )

    # --- loss ----------------------------------------------------------------------------------
    label_smoothing: float = _cited(0.1, "[paper] 7: epsilon 0.1, u(k) = 1/K", "label smoothing")
    aux_weight: float = _cited(0.4, "[slim] aux_loss weights=0.4", "weight of the aux head's loss")

    # --- model regularisation and statistics -------------------------------------------------
    dropout: float = _cited(0.2, "[slimnet] dropout_keep_prob 0.8", "dropout before fc")
    bn_momentum: float = _cited(
        0.0003, "[slimnet] batch_norm_decay 0.9997", "BatchNorm running-statistics momentum "
        "(PyTorch convention: new = (1 - m) * old + m * batch)"
    )
    ema_decay: float = _cited(
        0.9999, "[paper] 8 running average, [model] MOVING_AVERAGE_DECAY", "exponential moving "
        "average of the weights used for evaluation (0 = off)"
    )
    precise_bn_images: int = _cited(512, "[precise]", "recompute the evaluated weights' BatchNorm "
                                    "statistics on this many training images (0: running ones)")

    # --- augmentation ---------------------------------------------------------------------------
    crop_scale: list[float] = _cited(
        [0.05, 1.0], "[slimpre] area_range", "random crop area, as fractions of the image"
    )
    crop_ratio: list[float] = _cited(
        [0.75, 4 / 3], "[slimpre] aspect_ratio_range", "random crop aspect ratio range"
    )
    flip: bool = _cited(
        True, "[slimpre] random_flip_left_right", "mirror half the training images (turn off "
        "for text, digits and other handed images)"
    )

    # --- execution -------------------------------------------------------------------------------
    dtype: str = _cited(
        "float32", "-", "compute dtype: float32 or bfloat16 (float32 master weights and "
        "BatchNorm statistics either way)"
    )
    seed: int = _cited(0, "-", "seed for initialisation, shuffling, augmentation and dropout")
    workers: int = _cited(4, "-", "image decoding threads")
    prefetch: int = _cited(4, "-", "batches decoded ahead of the training step")
    compile: bool | None = _cited(
        None, "-", "mx.compile the training step; default: on a GPU, not on the CPU (there the "
        "eager step is faster and compiling costs minutes: docs/performance.md)"
    )

    # --- filled in by resolve() ---------------------------------------------------------------
    recipe: str | None = _cited(None, "-", "scratch (the paper with TF-slim's single-machine rate, "
                                "no clipping), paper (exactly) or fine-tune (with --init)")
    aux_logits: bool | None = _cited(
        None, "-", "train the auxiliary head; default: when the image size reaches the head's "
        "minimum for the stem (299 px; 151 for stem 151, 77 for stem 79)"
    )
    given: list[str] = _cited(
        [], "-", "the settings that were given (flags, --config); the others are the recipe's "
        "defaults or derived from these, and a run's train_config.json passed to --config "
        "applies only these, deriving the rest again"
    )

    def __post_init__(self) -> None:
        if isinstance(self.stem, int) and not isinstance(self.stem, bool):
            self.stem = str(self.stem)  # "stem": 151 in a JSON file reads as naturally as "151"
        if self.max_steps == 0:
            self.max_steps = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown training setting(s): {', '.join(unknown)}; see `mlx-inception train "
                "--help`"
            )
        config = cls(**data)
        for item in fields(cls):  # a config file or a damaged checkpoint can hold anything
            if item.name in data:
                _check_type(item.name, item.type, getattr(config, item.name))
        return config


_TYPE_NAMES = {
    "int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string",
    "list[float]": "a pair of numbers", "list[str]": "a list of setting names", "None": "null",
}


def _check_type(name: str, annotation: str, value: Any) -> None:
    """Raise ``ConfigError`` unless ``value`` fits the field's annotation (e.g. "float | None")."""
    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    options = [option.strip() for option in annotation.split("|")]
    fits = {
        "None": value is None,
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": is_number(value),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
        "list[float]": isinstance(value, list) and len(value) == 2
        and all(is_number(v) for v in value),
        "list[str]": isinstance(value, list) and all(isinstance(v, str) for v in value),
    }
    if not any(fits[option] for option in options):
        expected = " or ".join(_TYPE_NAMES[option] for option in options)
        raise ConfigError(f"training setting {name} must be {expected}, got {value!r}")


# Values that change when fine-tuning pretrained weights, with their sources. The learning rate
# depends on what trains: TF-slim's flowers script uses 0.01 for the new head alone (stage 1)
# and 0.0001 once every layer trains (stage 2), both at batch 32 with a fixed rate.
FINE_TUNE: dict[str, tuple[Any, str]] = {
    "epochs": (10, "[flowers] 1000 steps x 32 images ~ 10 epochs of its 3,320 images"),
    "freeze": ("backbone", "[flowers] trainable_scopes=Logits,AuxLogits (stage 1)"),
    "base_learning_rate": (0.01, "[flowers] learning_rate=0.01 (head only)"),
    "reference_batch": (32, "[flowers] batch_size=32"),
    "lr_decay_epochs": (0.0, "[flowers] learning_rate_decay_type=fixed"),
    "label_smoothing": (0.0, "[slim] label_smoothing default 0"),
    "clip_norm": (0.0, "[slim] no clipping"),
    "ema_decay": (0.0, "[slim] moving_average_decay default None"),
}
FINE_TUNE_ALL_LAYERS_LR = (0.0001, "[flowers] learning_rate=0.0001 (stage 2, all layers)")
RECIPES = ("scratch", "paper", "fine-tune")
SINGLE_MACHINE = (0.01, 32)  # [single] train_image_classifier.py: learning_rate, batch_size
# Where --recipe paper departs from the default (besides the rate): under torchvision's init the
# first gradients' norm is ~3,400 (digits, 75 px), and clipping to 2.0 shrank those steps ~1,000x.
PAPER: dict[str, tuple[Any, str]] = {"clip_norm": (2.0, "[paper] 8: gradient clipping at 2.0")}


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Return the settings in a JSON config file (any TrainConfig fields)."""
    path = Path(path)
    try:
        data = read_json(path, ConfigError)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a JSON object of settings")
    TrainConfig.from_dict({k: v for k, v in data.items()})  # reject unknown names early
    if "given" in data:  # a run's train_config.json: what was chosen, not what was derived
        data = {name: data[name] for name in data["given"] if name in data}
    return data


# The settings that name local folders: saved absolute, so that a run resumes from any folder.
PATH_SETTINGS = ("data", "val", "out")


def absolute_paths(settings: dict[str, Any]) -> dict[str, str]:
    """Return the folder settings among ``settings`` made absolute (``~`` expanded)."""
    return {name: os.path.abspath(os.path.expanduser(str(settings[name])))
            for name in PATH_SETTINGS if settings.get(name)}


def resolve(overrides: dict[str, Any], world_size: int = 1) -> tuple[TrainConfig, list[str]]:
    """Return the final configuration for ``overrides`` and notes on what was decided.

    The recipe is the paper's unless ``init`` is given, then the fine-tuning one; explicit
    overrides always win. Derived values: the learning rate (linear scaling with the global
    batch) and, from scratch, the network (``settle_architecture``). With ``init`` the network
    is settled when the initial weights are loaded (``training.network.build_network``): its
    variant and therefore the auxiliary head's minimum input size come from them.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None and k != "given"}
    overrides.update(absolute_paths(overrides))
    config = TrainConfig.from_dict({**overrides, "given": sorted(overrides)})
    check(config, world_size)  # before the arithmetic below divides by any of it
    notes: list[str] = []
    fine_tune = bool(config.init)
    if config.recipe == "paper" and fine_tune:
        raise ConfigError("--recipe paper trains from scratch: drop --init or --recipe")
    if fine_tune:
        values = {k: v for k, (v, _) in FINE_TUNE.items() if k not in overrides}
        config = replace(config, recipe="fine-tune", **values)
        if (
            "base_learning_rate" not in overrides
            and config.freeze == "none"
        ):
            config.base_learning_rate = FINE_TUNE_ALL_LAYERS_LR[0]
    else:
        config.recipe = config.recipe or "scratch"
        if config.recipe == "paper":
            config = replace(config, **{k: v for k, (v, _) in PAPER.items() if k not in overrides})
    if config.learning_rate is None:
        base, reference, batch = (config.base_learning_rate, config.reference_batch,
                                  config.batch_size)
        config.learning_rate = base * batch / reference
        rule = f"{base:g} x batch {batch} / {reference} (linear scaling rule)"
        own_rule = {"base_learning_rate", "reference_batch"} & set(overrides)
        if config.recipe == "scratch" and not own_rule:
            # The paper's scaled to batch 32 (0.0009) learned nothing in 5 epochs of the digits.
            (rate, size), paper = SINGLE_MACHINE, base * max(1.0, batch / reference)
            config.learning_rate = min(rate * batch / size, paper)
            rule = (f"TF-slim's {rate:g} x batch {batch} / {size}" if rate * batch / size < paper
                    else f"the paper's {base:g} x max(1, batch {batch} / {reference})")
            rule += " (--recipe paper: 0.045 x batch / 1600)"
        notes.append(f"learning rate {config.learning_rate:.6g} = {rule}")
    if not fine_tune:
        config, settled = settle_architecture(config)
        notes += settled
    if config.compile is None:
        config.compile = mx.default_device().type == mx.DeviceType.gpu
        notes.append(
            "the training step is compiled on the GPU (--no-compile to run it eagerly)"
            if config.compile else
            "the training step runs eagerly on the CPU, faster there (--compile to compile it)"
        )
    check(config, world_size)
    return config, notes


def network_config(config: TrainConfig) -> InceptionV3Config:
    """Return the architecture ``config`` describes as an ``InceptionV3Config`` (unset variant
    fields and classes at torchvision's defaults), for size rules."""
    values = {name: getattr(config, name) for name in ARCHITECTURE}
    values = {name: value for name, value in values.items() if value is not None}
    return InceptionV3Config(aux_logits=bool(config.aux_logits), **values)


def settle_architecture(
    config: TrainConfig, base: InceptionV3Config | None = None
) -> tuple[TrainConfig, list[str]]:
    """Return ``config`` with its network fixed, and notes on what was decided.

    Each variant field left unset is taken from ``base``, the config of the initial weights (or
    of the checkpoint being resumed); torchvision's network when ``base`` is None. A value set
    explicitly wins, with a note when it differs from the weights' (the stems have the same
    parameters, so weights move between them). ``aux_logits``, when unset, is on where the
    image size reaches the head's minimum for that stem.
    """
    notes: list[str] = []
    reference = base or InceptionV3Config()
    values = {}
    for name in ARCHITECTURE:
        chosen, theirs = getattr(config, name), getattr(reference, name)
        values[name] = theirs if chosen is None else chosen
        if base is not None and chosen is not None and chosen != theirs:
            notes.append(f"{name}={chosen} although the initial weights were made with {theirs}")
    config = replace(config, **values)
    if config.aux_logits is None:
        minimum = minimum_input_size(network_config(config), aux=True)
        config.aux_logits = config.image_size >= minimum
        if not config.aux_logits:
            notes.append(
                f"training without the auxiliary head: with stem {config.stem} it needs images "
                f"of at least {minimum} px (got {config.image_size})"
            )
    check(config)
    return config, notes


def check(config: TrainConfig, world_size: int = 1) -> None:
    """Raise ``ConfigError`` with one line if ``config`` cannot be run."""
    if not config.data:
        raise ConfigError(
            "no training data: pass --data DIR (a folder with one sub-folder per class)"
        )
    if not config.out:
        raise ConfigError("no run directory: pass --out RUN_DIR")
    if config.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {config.epochs}")
    if config.batch_size < 2:
        raise ConfigError(f"--batch-size must be at least 2 (BatchNorm), got {config.batch_size}")
    if config.reference_batch < 1:
        raise ConfigError(f"--reference-batch must be at least 1, got {config.reference_batch}")
    for flag, value in (("--seed", config.seed), ("--precise-bn-images", config.precise_bn_images)):
        if value < 0:
            raise ConfigError(f"{flag} must be 0 or more, got {value}")
    if config.seed >= 2**64:  # MLX's random keys are 64 bits
        raise ConfigError(f"--seed must be below 2**64, got {config.seed:.6g}")
    if config.recipe not in (None, *RECIPES):
        raise ConfigError(f"--recipe must be one of {', '.join(RECIPES)}, got {config.recipe!r}")
    # Written as "not (valid)" so that NaN, which fails every comparison, is refused too.
    positive, non_negative = (0, False, math.inf, False), (0, True, math.inf, False)
    ranges = [  # flag, value, (low, low included, high, high included)
        ("--base-lr", config.base_learning_rate, positive),
        ("--lr-decay-rate", config.lr_decay_rate, positive),
        ("--lr-decay-epochs", config.lr_decay_epochs, non_negative),
        ("--rmsprop-decay", config.rmsprop_decay, (0, True, 1, False)),
        ("--rmsprop-momentum", config.rmsprop_momentum, (0, True, 1, False)),
        ("--rmsprop-epsilon", config.rmsprop_epsilon, positive),
        ("--clip-norm", config.clip_norm, non_negative),
        ("--weight-decay", config.weight_decay, non_negative),
        ("--aux-weight", config.aux_weight, non_negative),
        ("--bn-momentum", config.bn_momentum, (0, True, 1, True)),
    ]
    for flag, value, (low, low_included, high, high_included) in ranges:
        above = value >= low if low_included else value > low
        below = value <= high if high_included else value < high
        if not (above and below):
            opening, closing = "[" if low_included else "(", "]" if high_included else ")"
            interval = f"{opening}{low:g}, {high:g}{closing}"
            raise ConfigError(f"{flag} must be in {interval}, got {value}")
    if config.max_steps is not None and config.max_steps < 1:
        raise ConfigError(f"--max-steps must be at least 1, got {config.max_steps}")
    if config.stem is not None and config.stem not in STEM_VARIANTS:
        raise ConfigError(
            f"--stem {config.stem} is not one of the paper's stems: {', '.join(STEM_VARIANTS)}"
        )
    if config.mixed_7c_pool not in (None, "avg", "max"):
        raise ConfigError(f"--mixed-7c-pool must be avg or max, got {config.mixed_7c_pool!r}")
    if config.stem is not None:  # unknown until the --init weights are read
        network = network_config(config)
        minimum = minimum_input_size(network)
        if config.image_size < minimum:
            raise ConfigError(
                f"--image-size {config.image_size} is below the minimum of {minimum} px for "
                f"stem {config.stem}; use a larger size or a smaller stem (--stem 151 or 79)"
            )
        aux_minimum = minimum_input_size(network, aux=True)
        if config.aux_logits and config.image_size < aux_minimum:
            raise ConfigError(
                f"the auxiliary head needs images of at least {aux_minimum} px with stem "
                f"{config.stem}; use --image-size {aux_minimum} or --no-aux-logits"
            )
    per_process, remainder = divmod(config.batch_size, world_size)
    if remainder or per_process < 1:
        raise ConfigError(
            f"--batch-size {config.batch_size} does not split evenly over {world_size} "
            f"processes; use a multiple of {world_size}"
        )
    if config.micro_batches < 1 or per_process % config.micro_batches:
        raise ConfigError(
            f"each process's {per_process} images per step do not split into "
            f"{config.micro_batches} micro-batches; use a divisor of {per_process}"
        )
    if per_process // config.micro_batches < 2:
        raise ConfigError(
            "BatchNorm needs at least 2 images per micro-batch; raise --batch-size or lower "
            "--micro-batches"
        )
    if not 0.0 <= config.val_split < 1.0:
        raise ConfigError(f"--val-split must be in [0, 1), got {config.val_split}")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ConfigError(f"--label-smoothing must be in [0, 1), got {config.label_smoothing}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise ConfigError(f"--ema-decay must be in [0, 1), got {config.ema_decay}")
    if not 0.0 <= config.dropout < 1.0:
        raise ConfigError(f"--dropout must be in [0, 1), got {config.dropout}")
    if config.learning_rate is not None and not (config.learning_rate > 0 and
                                                 math.isfinite(config.learning_rate)):
        raise ConfigError(f"--lr must be a positive number, got {config.learning_rate}")
    if config.dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"--dtype must be float32 or bfloat16, got {config.dtype!r}")
    low, high = config.crop_scale
    if not 0.0 < low <= high <= 1.0:
        raise ConfigError(f"crop_scale must satisfy 0 < min <= max <= 1, got {config.crop_scale}")
    low, high = config.crop_ratio
    if not 0.0 < low <= high:
        raise ConfigError(f"crop_ratio must satisfy 0 < min <= max, got {config.crop_ratio}")
    if config.workers < 1 or config.prefetch < 1:
        raise ConfigError("--workers and --prefetch must be at least 1")
