"""``mlx-inception inception-score DIR``: the Inception Score of a folder of generated images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InceptionError
from ..progress import ProgressBar
from . import HelpFormatter
from .fid import add_weights_argument


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..metrics.inception_score import DEFAULT_SPLITS

    parser = subparsers.add_parser(
        "inception-score",
        help="Inception Score of an image folder",
        description=(
            "Compute the Inception Score (Salimans et al. 2016) of the images directly inside "
            "DIR with the FID network (the same weights as `mlx-inception fid`): softmax of "
            "pool3 times the classifier's weights without bias, as the original code; the mean "
            "and standard deviation over SPLITS consecutive parts of the images, sorted by name."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("folder", metavar="DIR", help="folder of images")
    add_weights_argument(parser)
    parser.add_argument(
        "--splits", type=int, default=DEFAULT_SPLITS,
        help="number of parts the score is averaged over (the original code's 10)",
    )
    parser.add_argument("--batch-size", type=int, default=50, help="images per forward pass")
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import DataError
    from ..metrics.features import load_fid_inception
    from ..metrics.inception_score import inception_score_of_folder, score_images

    if args.batch_size < 1:
        raise InceptionError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.splits < 1:
        raise InceptionError(f"--splits must be at least 1, not {args.splits}")
    if not Path(args.folder).is_dir():
        raise DataError(f"{args.folder}: no such folder")
    score_images(args.folder, args.splits)  # too few images: say so before loading weights
    model = load_fid_inception(args.weights)
    progress = ProgressBar(0, Path(args.folder).name or args.folder, enabled=not args.quiet,
                           rate_unit="img")
    score = inception_score_of_folder(
        args.folder, model, splits=args.splits, batch_size=args.batch_size, progress=progress
    )
    if args.json:
        print(json.dumps({
            "inception_score": score.mean,
            "std": score.std,
            "splits": score.splits,
            "images": score.count,
            "path": args.folder,
        }))
    else:
        print(
            f"Inception Score {score.mean:.4f} +- {score.std:.4f}  "
            f"({score.count} images in {args.folder}, {score.splits} splits)"
        )
    return 0
