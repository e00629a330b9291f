"""``mlx-inception predict PATH...``: top-k ImageNet classes for image files, folders and globs."""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import TYPE_CHECKING

from ..data.folder import find_images
from ..progress import ProgressBar
from . import HelpFormatter

if TYPE_CHECKING:  # the predictor imports MLX; `--help` should not
    from ..inference.predictor import Prediction

def default_weights() -> str:
    """Return the registry's default weights name (torchvision's ImageNet weights)."""
    from ..checkpoints.registry import default_name

    return default_name()


def positive_int(text: str) -> int:
    """Return ``text`` as an integer of at least 1 (an argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """Add the flags shared by predict and evaluate: weights, dtype, batch size, crops, fast."""
    parser.add_argument(
        "--weights",
        default=default_weights(),
        help="registry name, Hugging Face Hub repo id, converted weights directory, training "
        "run (RUN_DIR: its best, else its last; or RUN_DIR/best, RUN_DIR/last) or PyTorch "
        "checkpoint (.pth/.safetensors)",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float16", "bfloat16"],
        help="compute dtype; half precision folds BatchNorm into the convolutions in float32 first",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=batch_size,
        help="network inputs per forward pass",
    )
    parser.add_argument(
        "--crops",
        type=int,
        default=1,
        choices=[1, 10, 12, 144],
        help="views per image, softmax averaged: 1 = the weights' own resize and centre crop; "
        "10 = corners + centre, mirrored; 12 = corners + centre + whole centre square, "
        "mirrored; 144 = GoogLeNet's 4 scales x 3 squares x 6 crops x 2 mirrors",
    )
    parser.add_argument(
        "--no-fast",
        action="store_true",
        help="run the plain network instead of the fast inference path (BatchNorm folded into "
        "the convolutions, parallel 1x1 convolutions fused, mx.compile on a GPU); the results "
        "agree to float rounding",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify images (top-k classes and probabilities)",
        description=(
            "Classify image files with Inception-v3 and print each one's top-k classes. PATH "
            "may be a file, a folder (searched recursively for .jpg/.png/.webp/.bmp/.gif/.tif "
            "files) or a quoted glob such as 'photos/**/*.jpg'. Unreadable files are reported "
            "and the others still classified; the exit status is 1 if any file failed."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image file, folder or glob")
    add_model_arguments(parser, batch_size=8)
    parser.add_argument("--top-k", type=positive_int, default=5, help="classes listed per image")
    parser.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per line: {"path", "top_k": [{"index", "label", "probability"}]} '
        'or {"path", "error"}',
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(func=run)


def expand_paths(arguments: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Return the image files named by files, folders and globs, and (path, error) for misses.

    Files named explicitly are kept whatever their ending (decoding decides); folders give
    their image files recursively; globs (``*``, ``?``, ``[``, ``**``) are expanded. Each file
    is listed once, in the order given.
    """
    files: list[str] = []
    missing: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for argument in arguments:
        expanded = os.path.expanduser(argument)
        if os.path.isdir(expanded):
            found = find_images(expanded)
            if not found:
                missing.append((argument, f"{argument}: folder has no image files"))
            for path in found:
                add(str(path))
        elif os.path.exists(expanded):
            add(expanded)
        elif glob.has_magic(expanded):
            matches = sorted(glob.glob(expanded, recursive=True))
            if not matches:
                missing.append((argument, f"{argument}: no files match this pattern"))
            for match in matches:
                if os.path.isdir(match):
                    for path in find_images(match):
                        add(str(path))
                else:
                    add(match)
        else:
            missing.append((argument, f"{argument}: no such file or folder"))
    return files, missing


def format_prediction(prediction: Prediction) -> list[str]:
    """Return the human-readable lines for one prediction: the path, then one line per class."""
    lines = [prediction.source]
    for rank, entry in enumerate(prediction.top_k, start=1):
        label = entry.label if entry.label is not None else f"class {entry.index}"
        lines.append(f"  {rank:>2}. {entry.probability * 100:6.2f}%  {entry.index:>4}  {label}")
    return lines


def run(args: argparse.Namespace) -> int:
    from ..inference.predictor import Predictor

    files, missing = expand_paths(args.paths)
    failed = 0
    for path, message in missing:
        failed += 1
        _report_error(path, message, args.json)
    if not files:
        return 1  # every argument was reported above; loading weights would be wasted
    predictor = Predictor.from_source(
        args.weights,
        dtype=args.dtype,
        top_k=args.top_k,
        batch_size=args.batch_size,
        crops=args.crops,
        fast=not args.no_fast,
    )
    progress = ProgressBar(len(files), "predict", enabled=not args.quiet and len(files) > 1,
                           rate_unit="img")
    for done, prediction in enumerate(predictor.iter_predict(files), start=1):
        progress.clear()
        if prediction.error is not None:
            failed += 1
            _report_error(prediction.source, prediction.error, args.json)
        elif args.json:
            print(json.dumps(prediction.to_dict()), flush=True)
        else:
            print("\n".join(format_prediction(prediction)), flush=True)
        progress.update(done)
    if failed and not args.json:
        print(f"{len(files) + len(missing) - failed} predicted, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def _report_error(path: str, message: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"path": path, "error": message}), flush=True)
    else:
        print(f"error: {message}", file=sys.stderr, flush=True)
