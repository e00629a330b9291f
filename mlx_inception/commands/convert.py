"""``mlx-inception convert SRC OUT_DIR``: a PyTorch checkpoint -> an MLX weights directory."""

from __future__ import annotations

import argparse
import json
import sys

from ..checkpoints.convert import convert_checkpoint, default_config_for
from ..model import IMAGENET_MEAN, IMAGENET_STD, InceptionV3Config, Preprocessing


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a torchvision/timm checkpoint to MLX",
        description=(
            "Convert a torchvision or timm Inception-v3 checkpoint (.pth/.pt/.bin read with "
            "torch.load(weights_only=True), or .safetensors read without PyTorch) into "
            "OUT_DIR/model.safetensors and OUT_DIR/config.json. Nothing is written on failure."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
        "--normalization", choices=["imagenet", "inception"], default=None,
        help="input normalisation: ImageNet mean/std, or mean = std = 0.5 (timm's tf/tv "
        "weights); default: imagenet",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    config = default_config_for(Path(args.src))
    if args.transform_input is not None:
        config.transform_input = args.transform_input
    if args.normalization == "inception":
        config.preprocessing = Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3)
    elif args.normalization == "imagenet":
        config.preprocessing = Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    out, notes = convert_checkpoint(args.src, args.out_dir, dtype=args.dtype, config=config)
    saved = InceptionV3Config.from_dict(json.loads((out / "config.json").read_text()))
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
