"""``mlx-inception export SOURCE OUT``: MLX weights (a run, its best/last, a converted folder)
-> a torchvision state dict (``.safetensors`` without PyTorch, ``.pth`` with it)."""

from __future__ import annotations

import argparse
import json
import sys

from . import HelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write MLX weights back as a torchvision state dict",
        description=(
            "Write a training run (its best checkpoint, else its last), RUN_DIR/best or "
            "RUN_DIR/last, or a converted weights folder as a state dict that "
            "torchvision.models.inception_v3(num_classes=..., aux_logits=...) loads with "
            "strict=True. OUT.safetensors is written without PyTorch; OUT.pth needs it. The "
            "file appears complete or not at all."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("source", help="run directory, RUN_DIR/best|last or weights folder")
    parser.add_argument("out", help="file to write: OUT.safetensors or OUT.pth")
    parser.add_argument(
        "--dtype", choices=["float32", "float16", "bfloat16"], default=None,
        help="cast the weights (BatchNorm statistics stay float32); default: as stored",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints.export import export_weights
    from ..checkpoints.local import resolve_local
    from ..errors import CheckpointError

    source = resolve_local(args.source)
    if source is None:
        raise CheckpointError(f"{args.source}: no such run, checkpoint or weights folder")
    out, notes = export_weights(source, args.out, dtype=args.dtype)
    if args.json:
        print(json.dumps({"source": str(source), "out": str(out), "notes": notes}))
    else:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        print(out)
    return 0
