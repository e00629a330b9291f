"""``mlx-inception train``: train from scratch with the paper's recipe, or fine-tune, on folders.

Every recipe value is a flag; ``--config FILE`` reads them from JSON (flags win), and the
resolved configuration is saved as ``RUN_DIR/train_config.json``. The same command runs as one
process of a data-parallel job when started by ``mlx.launch`` (or with ``MLX_RANK`` and
``MLX_HOSTFILE`` set).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

# Flags that set TrainConfig fields: flag -> (field, type, metavar). Defaults and help text
# come from the recipe itself, so --help always shows the values (and sources) training uses.
FLAGS = {
    "--data": ("data", str, "DIR"),
    "--out": ("out", str, "RUN_DIR"),
    "--val": ("val", str, "DIR"),
    "--val-split": ("val_split", float, "F"),
    "--init": ("init", str, "SOURCE"),
    "--freeze": ("freeze", str, "WHAT"),
    "--epochs": ("epochs", int, "N"),
    "--max-steps": ("max_steps", int, "N"),
    "--batch-size": ("batch_size", int, "B"),
    "--micro-batches": ("micro_batches", int, "M"),
    "--image-size": ("image_size", int, "S"),
    "--stem": ("stem", str, "STEM"),
    "--mixed-7c-pool": ("mixed_7c_pool", str, "POOL"),
    "--lr": ("learning_rate", float, "LR"),
    "--base-lr": ("base_learning_rate", float, "LR"),
    "--reference-batch": ("reference_batch", int, "B"),
    "--lr-decay-rate": ("lr_decay_rate", float, "R"),
    "--lr-decay-epochs": ("lr_decay_epochs", float, "E"),
    "--rmsprop-decay": ("rmsprop_decay", float, "D"),
    "--rmsprop-momentum": ("rmsprop_momentum", float, "M"),
    "--rmsprop-epsilon": ("rmsprop_epsilon", float, "EPS"),
    "--clip-norm": ("clip_norm", float, "C"),
    "--weight-decay": ("weight_decay", float, "WD"),
    "--label-smoothing": ("label_smoothing", float, "EPS"),
    "--aux-weight": ("aux_weight", float, "W"),
    "--dropout": ("dropout", float, "P"),
    "--bn-momentum": ("bn_momentum", float, "M"),
    "--ema-decay": ("ema_decay", float, "D"),
    "--precise-bn-images": ("precise_bn_images", int, "N"),
    "--recipe": ("recipe", str, "RECIPE"),
    "--crop-scale": ("crop_scale", float, "F"),
    "--crop-ratio": ("crop_ratio", float, "R"),
    "--dtype": ("dtype", str, "DTYPE"),
    "--seed": ("seed", int, "N"),
    "--workers": ("workers", int, "N"),
    "--prefetch": ("prefetch", int, "N"),
}
PAIRS = {"crop_scale", "crop_ratio"}
CHOICES = {"stem": ("299", "151", "79"), "mixed_7c_pool": ("avg", "max"),
           "recipe": ("scratch", "paper", "fine-tune")}
SWITCHES = {
    "--aux-logits": "aux_logits",
    "--bn-aux": "bn_aux",
    "--pool-count-include-pad": "pool_count_include_pad",
    "--flip": "flip",
    "--compile": "compile",
}


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for flags whose default is decided by the recipe (None here)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or "default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def _show(value) -> str:
    if isinstance(value, list):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..training.recipe import FINE_TUNE, TrainConfig

    parser = subparsers.add_parser(
        "train",
        help="train from scratch (the paper's recipe) or fine-tune on image folders",
        description=(
            "Train Inception-v3 on an ImageFolder tree (DIR/<class>/<images>). Without --init "
            "the defaults are the paper's from-scratch recipe (RMSProp as TensorFlow defines it, "
            "x0.94 every 2 epochs, label smoothing 0.1, aux loss 0.4, weight decay 4e-5, "
            "parameter averaging 0.9999) with TF-slim's single-machine rate (0.01 at batch 32, "
            "at most the paper's 0.045 x max(1, batch/1600)) and no clipping; --recipe paper "
            "is the paper exactly (0.045 x batch/1600, clipping 2.0); with --init they are "
            "TF-slim's fine-tuning values (new head only, lr 0.01 at batch 32, no smoothing or "
            "averaging; lr 1e-4 with --freeze none). RUN_DIR receives train_config.json, "
            "metrics.jsonl, steps.jsonl, curves.png and last/best checkpoints (loadable by "
            "mlx_inception.load). Validation uses BatchNorm statistics recomputed for the "
            "evaluated weights (--precise-bn-images). Ctrl-C saves a checkpoint; --resume "
            "RUN_DIR continues exactly."
        ),
        formatter_class=_Formatter,
        epilog=(
            "fine-tuning changes these defaults: "
            + ", ".join(f"{name}={value}" for name, (value, _) in FINE_TUNE.items())
            + ". Data-parallel: mlx.launch --hostfile hosts.json -n N -- "
            "mlx-inception train ... (see the README)."
        ),
    )
    info = {f.name: f for f in fields(TrainConfig)}
    defaults = TrainConfig()
    for flag, (name, kind, metavar) in FLAGS.items():
        meta = info[name].metadata
        source = meta.get("source", "-")
        help_text = meta.get("help", "")
        default = getattr(defaults, name)
        if default not in (None, ""):
            help_text += f" (default: {_show(default)}"
            help_text += f"; {source})" if source not in ("-", "ours", "rule") else ")"
        elif source.startswith("["):  # a default decided at run time, a citation all the same
            help_text += f" ({source})"
        parser.add_argument(
            flag, dest=name, type=kind, metavar=metavar, default=None,
            nargs=2 if name in PAIRS else None, choices=CHOICES.get(name),
            help=help_text.replace("%", "%%"),  # argparse formats help with %
        )
    for flag, name in SWITCHES.items():
        meta = info[name].metadata
        help_text = meta.get("help", "")
        if getattr(defaults, name) is not None:  # else the help says how the default is chosen
            help_text += f" (default: {getattr(defaults, name)})"
        elif meta.get("source", "-").startswith("["):
            help_text += f" ({meta['source']})"
        parser.add_argument(
            flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
            help=help_text.replace("%", "%%"),
        )
    parser.add_argument(
        "--config", metavar="FILE",
        help="JSON file of settings (any of the names in train_config.json); flags override it",
    )
    parser.add_argument(
        "--resume", metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint (only --epochs, "
        "--max-steps, --workers and --prefetch may change)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or notes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..training.api import train
    from ..training.distributed import init_group

    overrides = {name: getattr(args, name) for name, _, _ in FLAGS.values()}
    overrides.update({name: getattr(args, name) for name in SWITCHES.values()})
    for name in PAIRS:
        if overrides[name] is not None:
            overrides[name] = list(overrides[name])
    group = init_group()
    log = (lambda message: None) if args.quiet else (
        lambda message: print(message, file=sys.stderr)
    )
    summary = train(resume=args.resume, config_file=args.config, progress=not args.quiet,
                    log=log, group=group, **overrides)
    # A run stopped by Ctrl-C (after saving) exits like an interrupted command.
    status = 130 if summary["stopped"] == "interrupted" else 0
    if group.rank() != 0:
        return status
    if args.json:
        print(json.dumps(summary))
    else:
        best = summary["best_val_top1"]
        best_text = f", best val top-1 {100 * best:.2f}% (epoch {summary['best_epoch']})" if (
            best is not None) else ""
        print(f"{summary['run_dir']}: {summary['epochs_completed']} epochs, "
              f"{summary['steps']} steps{best_text}")
    return status
