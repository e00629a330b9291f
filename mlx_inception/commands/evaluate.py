"""``mlx-inception evaluate --data DIR``: top-1/top-5 accuracy on a labelled image folder."""

from __future__ import annotations

import argparse
import json
import sys

from ..progress import ProgressBar
from . import HelpFormatter
from .predict import add_model_arguments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="top-1/top-5 accuracy on a folder of labelled images",
        description=(
            "Measure top-1 and top-5 accuracy on DIR/<class>/**/<image> (an ImageFolder tree). "
            "Class folders are matched to the network's outputs by ImageNet synset id "
            "(n01440764, as in the ILSVRC-2012 validation tree), output index (0..999) or class "
            "name (tench, great_white_shark); otherwise by position in sorted order when there "
            "are as many folders as outputs. Unreadable images are listed and left out of the "
            "counts; the exit status is then 1."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="ImageFolder root")
    add_model_arguments(parser, batch_size=16)
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"top1", "top5", "count", "top1_correct", "top5_correct", "crops", '
        '"class_mapping", "failed"}',
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.folder import ImageFolder, class_folders
    from ..inference.evaluate import class_mapping, evaluate
    from ..inference.predictor import Predictor

    classes = class_folders(args.data)  # check the folder before loading any weights
    predictor = Predictor.from_source(
        args.weights,
        dtype=args.dtype,
        batch_size=args.batch_size,
        crops=args.crops,
        fast=not args.no_fast,
    )
    config = predictor.model.config
    mapping, how = class_mapping(classes, config.num_classes, predictor.labels)
    folder = ImageFolder(args.data, class_to_index=mapping, min_classes=1)
    for problem in folder.skipped:
        print(f"warning: {problem}", file=sys.stderr)
    progress = ProgressBar(len(folder), "evaluate", enabled=not args.quiet, rate_unit="img")
    result = evaluate(predictor, folder, mapping=how, on_progress=progress)
    progress.close()
    for _, error in result.failed:
        print(f"error: {error}", file=sys.stderr)
    if result.count == 0:
        unreadable = f" (all {len(result.failed)} failed)" if result.failed else ""
        print(f"error: no images were evaluated in {folder.root}{unreadable}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict()))
    elif result.count:
        print(
            f"{folder.root}: {len(folder.classes)} classes (matched by {how}), "
            f"{result.count} images, {result.crops} crop{'s' if result.crops > 1 else ''}"
        )
        for name, accuracy, correct in (
            ("top-1", result.top1, result.top1_correct),
            ("top-5", result.top5, result.top5_correct),
        ):
            print(
                f"{name} accuracy {accuracy * 100:6.2f}%  ({correct}/{result.count})  "
                f"error {(1 - accuracy) * 100:6.2f}%"
            )
        if result.failed:
            print(f"{len(result.failed)} unreadable image(s) left out", file=sys.stderr)
    return 1 if result.failed or result.count == 0 else 0
