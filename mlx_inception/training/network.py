"""The network to train: built from torchvision's init or from pretrained weights, heads
replaced for a new set of classes, and parts frozen for fine-tuning."""

from __future__ import annotations

from dataclasses import replace

import mlx.core as mx
import mlx.nn as nn

from .. import kernels
from ..checkpoints.store import model_weights
from ..data.labels import imagenet_classes, imagenet_synsets
from ..model import InceptionV3, InceptionV3Config, Preprocessing
from ..model.inception_v3 import MIXED, STEM
from .recipe import (
    ARCHITECTURE,
    EVAL_RESIZE_RATIO,
    FINE_TUNE,
    ConfigError,
    TrainConfig,
    settle_architecture,
)

# The classifier heads; everything else is the backbone. TF-slim's fine-tuning trains exactly
# these scopes (trainable_scopes=InceptionV3/Logits,InceptionV3/AuxLogits).
HEADS = ("fc", "AuxLogits")
# Modules in the order data flows through them (the pools have no parameters but may be named).
MODULE_ORDER = STEM + MIXED


def is_statistic(key: str) -> bool:
    """Return True for BatchNorm running statistics (state, not trained by gradients)."""
    return key.endswith(("running_mean", "running_var"))


def is_decayed(key: str) -> bool:
    """Return True for the weights TF-slim's L2 regulariser covers: conv and fc weights.

    ``inception_v3_arg_scope`` puts ``l2_regularizer(weight_decay)`` on ``slim.conv2d`` and
    ``slim.fully_connected`` weights only: no BatchNorm parameters, no biases.
    """
    return key.endswith(("conv.weight", "fc.weight"))


def preprocessing_for(size: int, base: Preprocessing | None = None) -> Preprocessing:
    """Return evaluation preprocessing for ``size`` px crops, torchvision's 342/299 resize ratio
    kept, the normalisation of ``base`` (ImageNet mean/std when None)."""
    base = base or Preprocessing()
    if base.crop_size == size:
        return replace(base)
    return replace(base, resize_size=int(round(size * EVAL_RESIZE_RATIO)), crop_size=size)


def build_network(
    config: TrainConfig, classes: list[str], saved: InceptionV3Config | None = None
) -> tuple[InceptionV3, TrainConfig, list[str]]:
    """Return the network to train (float32, training mode), ``config`` with the network's
    variant settled, and notes on how it was built.

    From scratch: the variant ``config`` names, torchvision's initialisation seeded by
    ``config.seed``. With ``config.init``: the variant of those weights (stem, BN-auxiliary,
    pooling, input convention) unless ``config`` sets it, and every weight whose name and shape
    fit copied; a classifier whose number of classes differs starts with zero output (the rest of
    the aux head, when the weights have none, from torchvision's initialisation). ``saved``: the
    architecture of a checkpoint being resumed (its weights are loaded by the caller; the
    initial weights are not needed again).
    """
    notes: list[str] = []
    mx.random.seed(config.seed)
    if saved is not None:
        config, _ = settle_architecture(config, saved)
        model = kernels.install(InceptionV3(saved, init_weights=False))
        set_batchnorm_momentum(model, config.bn_momentum)
        model.train()
        return model, config, notes
    base: InceptionV3Config | None = None
    source_weights: dict[str, mx.array] = {}
    if config.init:
        from ..loading import load  # imported here: loading pulls in conversion code

        pretrained = load(config.init)
        base = pretrained.config
        source_weights = model_weights(pretrained)
        del pretrained
    config, settled = settle_architecture(config, base)
    notes += settled
    model_config = InceptionV3Config(
        num_classes=len(classes),
        aux_logits=bool(config.aux_logits),
        dropout=config.dropout,
        preprocessing=preprocessing_for(config.image_size),
        labels=list(classes),
        source={"trained_from": "scratch"},
        **{name: getattr(config, name) for name in ARCHITECTURE},
    )
    if base is not None:
        model_config = replace(
            model_config,
            transform_input=base.transform_input,
            preprocessing=preprocessing_for(config.image_size, base.preprocessing),
            source={"trained_from": str(config.init), "init_source": dict(base.source)},
        )
    model = kernels.install(InceptionV3(model_config))
    if source_weights:
        why = f"{len(classes)} classes; the weights have {_class_count(source_weights)}"
        if base is not None and base.num_classes == len(classes) and not _same_classes(
            base, classes
        ):  # as many outputs, for other classes: the classifiers start anew
            why = f"{len(classes)} classes, not the ones the weights were trained on"
            source_weights = {key: value for key, value in source_weights.items()
                              if not key.startswith(("fc.", "AuxLogits.fc.", "AuxLogits.fc_bn."))}
        copy_notes, new_head = _copy_initial_weights(model, source_weights, why)
        notes += copy_notes
        notes += _slow_head_note(config, new_head)
    set_batchnorm_momentum(model, config.bn_momentum)
    model.train()
    mx.eval(model.parameters())
    return model, config, notes


def _slow_head_note(config: TrainConfig, new_head: bool) -> list[str]:
    """Warn when a new (zero) classifier would train below the head-only fine-tuning rate: its
    gradients are as small as the features times the error, so it hardly moves and the
    training loss can sit at chance for epochs (docs/training.md, transfer)."""
    head_rate = FINE_TUNE["base_learning_rate"][0] * config.batch_size / 32
    if not new_head or config.learning_rate is None or config.learning_rate >= head_rate:
        return []
    note = (f"the new classifier starts at zero and learns slowly at lr "
            f"{config.learning_rate:g} (the training loss can stay at chance for epochs): "
            f"--lr {head_rate:g} trains it")
    if config.freeze != "backbone":
        note += ", or train it alone first (--init without --freeze), then every layer"
    return [note]


def _copy_initial_weights(
    model: InceptionV3, source_weights: dict[str, mx.array], why: str
) -> tuple[list[str], bool]:
    """Load every weight of ``source_weights`` that fits ``model``; zero new classifiers'
    output; return notes on what was replaced or left unused, and whether ``fc`` is new."""
    notes = []
    fresh = model_weights(model)
    copied, replaced = [], set()
    for key, value in fresh.items():
        old = source_weights.get(key)
        if old is not None and old.shape == value.shape:
            copied.append((key, old.astype(mx.float32)))
        else:
            replaced.add(key.rsplit(".", 1)[0])
    # A new classifier starts with zero output (BiT's fine-tuning rule, Kolesnikov et al. 2020):
    # the first predictions are uniform (loss ln K) instead of torchvision's std-0.1 weights
    # giving confident random logits that the first updates must undo. Its last affine layer is
    # zeroed: the fc, or with BN-auxiliary the BatchNorm's scale (zero weights in front of a
    # BatchNorm would be divided by sqrt(eps) and give ~30x gradients).
    zeroed = set()
    if "fc" in replaced:
        zeroed.add("fc")
    if "AuxLogits.fc_bn" in replaced:
        zeroed.add("AuxLogits.fc_bn.weight")
    elif "AuxLogits.fc" in replaced:
        zeroed.add("AuxLogits.fc")
    for key, value in fresh.items():
        if key in zeroed or key.rsplit(".", 1)[0] in zeroed:
            copied.append((key, mx.zeros_like(value)))
    model.load_weights(copied, strict=False)
    if replaced:
        if len([name for name in replaced if name.startswith("AuxLogits.")]) > 1:
            replaced = {n for n in replaced if not n.startswith("AuxLogits.")} | {"AuxLogits"}
        notes.append(
            f"new (classifiers start with zero output): {', '.join(sorted(replaced))} ({why})"
        )
    kept = {k.split(".")[0] for k in fresh}
    unused = sorted({k.split(".")[0] for k in source_weights} - kept)
    if unused:
        notes.append(f"not used from the initial weights: {', '.join(unused)}")
    return notes, "fc" in zeroed


def _same_classes(base: InceptionV3Config, classes: list[str]) -> bool:
    """Return whether the initial weights' outputs are ``classes``, in order.

    Named labels must equal the class folders; ImageNet's label set matches folders named by
    its WordNet ids (n01440764, ...) or by its class names. Weights without labels are taken as
    matching when the count does (nothing says otherwise).
    """
    if base.num_classes != len(classes):
        return False
    if base.labels is None:
        return True
    if isinstance(base.labels, str):
        if base.labels != "imagenet-1k":
            return False
        return classes in (imagenet_synsets(), imagenet_classes())
    return list(base.labels) == list(classes)


def _class_count(weights: dict[str, mx.array]) -> str:
    fc = weights.get("fc.weight")
    return f"{fc.shape[0]} classes" if fc is not None else "no fc"


def set_batchnorm_momentum(model: nn.Module, momentum: float) -> None:
    """Set every BatchNorm's running-statistics momentum (PyTorch's convention)."""
    for _, module in model.named_modules():
        if isinstance(module, nn.BatchNorm):
            module.momentum = momentum


def frozen_modules(spec: str) -> list[str]:
    """Return the top-level modules that ``spec`` freezes, in data-flow order.

    ``"none"``; ``"backbone"`` (everything but ``fc`` and ``AuxLogits``); or a module name such
    as ``"Mixed_6e"``: that module and every module before it.
    """
    if spec in ("none", "", None):
        return []
    if spec == "backbone":
        chosen = list(MODULE_ORDER)
    elif spec in MODULE_ORDER:
        chosen = list(MODULE_ORDER[: MODULE_ORDER.index(spec) + 1])
    else:
        raise ConfigError(
            f"--freeze {spec!r} is not 'none', 'backbone' or a module name "
            f"({MODULE_ORDER[0]}, ..., {MODULE_ORDER[-1]})"
        )
    return [name for name in chosen if not name.startswith("maxpool")]


def freeze(model: InceptionV3, names: list[str]) -> None:
    """Exclude the parameters of the modules ``names`` from training."""
    for name in names:
        getattr(model, name).freeze()


def set_training_mode(model: nn.Module, frozen: list[str]) -> None:
    """Put the model in training mode, its frozen modules in evaluation mode.

    A frozen module is a fixed function: its BatchNorm normalises with its running statistics
    and does not update them (as Keras does for frozen layers). Otherwise a pretrained
    backbone's statistics would drift to the new data while its weights could not follow.
    """
    model.train()
    for name in frozen:
        getattr(model, name).eval()
