"""``mlx-inception convert SRC OUT_DIR``: a PyTorch checkpoint -> an MLX weights directory."""

from __future__ import annotations

import argparse
import json
import sys

from ..checkpoints.convert import convert_checkpoint, default_config_for
from ..checkpoints.store import read_config
from ..data.transforms import timm_preprocessing
from ..model import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from . import HelpFormatter

# Named preprocessing of the weight sets that exist (see checkpoints/registry.json).
PRESETS = {
    "torchvision": Preprocessing,
    "timm": timm_preprocessing,
    "timm-imagenet": lambda: timm_preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD),
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a torchvision/timm checkpoint to MLX",
        description=(
            "Convert a torchvision or timm Inception-v3 checkpoint (.pth/.pt/.bin read with "
            "torch.load(weights_only=True), or .safetensors read without PyTorch) into "
            "OUT_DIR/model.safetensors and OUT_DIR/config.json. Nothing is written on failure."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("src", help="checkpoint file (.pth, .pt, .bin or .safetensors)")
    parser.add_argument("out_dir", help="directory to write the converted weights to")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
        help="storage dtype (BatchNorm statistics always stay float32)",
    )
    parser.add_argument(
        "--transform-input", action=argparse.BooleanOptionalAction, default=None,
        help="torchvision's transform_input; default: on for torchvision's pretrained "
        "inception_v3_google-*.pth, off otherwise",
    )
    parser.add_argument(
        "--preprocessing", choices=sorted(PRESETS), default="torchvision",
        help="how images are prepared for these weights: torchvision (resize 342 bilinear, crop "
        "299, ImageNet mean/std), timm (resize 341 bicubic, crop 299, mean = std = 0.5: timm's "
        "tv/tf/tf_adv weights) or timm-imagenet (timm's crop with ImageNet mean/std: gluon)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    config = default_config_for(Path(args.src))
    if args.transform_input is not None:
        config.transform_input = args.transform_input
    config.preprocessing = PRESETS[args.preprocessing]()
    out, notes = convert_checkpoint(args.src, args.out_dir, dtype=args.dtype, config=config)
    saved = read_config(out)
    if args.json:
        print(json.dumps({"out_dir": str(out), "notes": notes, "config": saved.to_dict()}))
    else:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        print(
            f"converted {args.src}: {saved.num_classes} classes, "
            f"aux_logits={saved.aux_logits}, transform_input={saved.transform_input}, "
            f"dtype={args.dtype}"
        )
        print(out)
    return 0
