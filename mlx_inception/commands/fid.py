"""``mlx-inception fid PATH_A PATH_B``: the Frechet Inception Distance, as pytorch-fid has it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import DataError, InceptionError
from ..progress import ProgressBar
from . import HelpFormatter

DIMS_CHOICES = (64, 192, 768, 2048)


class _HelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after every flag; the description and examples keep their line breaks."""


def add_weights_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--weights``, shared by ``fid`` and ``inception-score``."""
    from ..metrics.features import FID_WEIGHTS_NAME, WEIGHTS_ENVIRONMENT_VARIABLE

    parser.add_argument(
        "--weights", default=None,
        help=f"the FID network's weights: pytorch-fid's {FID_WEIGHTS_NAME} (reading it needs "
        "PyTorch), a .safetensors file with its keys, or a directory made by "
        f"--convert-weights (no PyTorch needed); default: ${WEIGHTS_ENVIRONMENT_VARIABLE}",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..metrics.features import FID_WEIGHTS_URL

    parser = subparsers.add_parser(
        "fid",
        help="Frechet Inception Distance between two image folders",
        description=(
            "Compute the Frechet Inception Distance between two folders of images (or saved\n"
            ".npz statistics, pytorch-fid's format) with the FID network as pytorch-fid defines\n"
            "it: images resized to 299x299 bilinearly, 2048 pool3 features, the matrix square\n"
            "root in float64. Weights: pytorch-fid's published file,\n" + FID_WEIGHTS_URL
        ),
        epilog=(
            "examples:\n"
            "  mlx-inception fid --convert-weights pt_inception-2015-12-05-6726825d.pth fid/\n"
            "  mlx-inception fid generated/ real/ --weights fid/\n"
            "  mlx-inception fid --save-stats real/ real_stats.npz --weights fid/\n"
            "  mlx-inception fid generated/ real_stats.npz --weights fid/"
        ),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "paths", nargs="*", metavar="PATH",
        help="two folders of images (the files directly inside: .bmp .jpg .jpeg .pgm .png .ppm "
        ".tif .tiff .webp) or .npz statistics; with --save-stats a folder and the .npz to write",
    )
    add_weights_argument(parser)
    parser.add_argument("--batch-size", type=int, default=50, help="images per forward pass")
    parser.add_argument(
        "--dims", type=int, default=2048, choices=DIMS_CHOICES,
        help="features: 2048 = pool3 (the standard); 768, 192, 64 = pytorch-fid's earlier layers",
    )
    parser.add_argument(
        "--save-stats", action="store_true",
        help="write the statistics (mu, sigma) of the first path to the second, an .npz that "
        "pytorch-fid reads too; refuses to overwrite",
    )
    parser.add_argument(
        "--convert-weights", nargs=2, metavar=("SRC", "OUT_DIR"), default=None,
        help="convert pytorch-fid's .pth into an MLX weights directory once (needs PyTorch); "
        "then pass --weights OUT_DIR",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.set_defaults(func=run)


def _describe(path: str, count: int | None) -> dict:
    return {"path": path, "images": count}


def run(args: argparse.Namespace) -> int:
    from ..atomic import check_destination
    from ..metrics.features import load_fid_inception, save_fid_weights
    from ..metrics.fid import (
        FeatureStatistics,
        compute_statistics,
        frechet_distance,
        image_files,
        is_statistics_file,
    )

    if args.convert_weights:
        if args.paths:
            raise InceptionError("--convert-weights takes no other paths")
        out = save_fid_weights(*args.convert_weights)
        if args.json:
            print(json.dumps({"weights_dir": str(out)}))
        else:
            print(f"converted {args.convert_weights[0]}: use --weights {out}")
        return 0
    if len(args.paths) != 2:
        raise InceptionError(
            f"fid takes two paths (folders or .npz files), got {len(args.paths)}: see --help"
        )
    if args.batch_size < 1:
        raise InceptionError(f"--batch-size must be at least 1, not {args.batch_size}")
    first, second = args.paths
    inputs = [first] if args.save_stats else [first, second]
    if args.save_stats:
        if is_statistics_file(first):
            raise DataError(
                f"{first} is already statistics: --save-stats computes them from a folder of "
                "images"
            )
        if Path(second).exists():
            raise DataError(f"{second} exists: choose a new file name for the statistics")
        if not second.lower().endswith(".npz"):
            raise DataError(f"{second}: the statistics file's name must end in .npz")
        check_destination(second, DataError)
    # Every input is checked before any image is decoded: a missing second folder or a
    # statistics file of another size fails at once, not after the first folder's features.
    saved = {path: FeatureStatistics.load(path) for path in inputs if is_statistics_file(path)}
    folders = [path for path in inputs if path not in saved]
    for path in folders:
        image_files(path)
    for path, stats in saved.items():
        if folders and stats.dims != args.dims:
            raise DataError(
                f"{path} holds statistics of {stats.dims} features but --dims is {args.dims}: "
                f"pass --dims {stats.dims}, or compute {path} again with --dims {args.dims}"
            )
    model = None

    def statistics(path: str) -> FeatureStatistics:
        nonlocal model
        if path in saved:
            return saved[path]
        if model is None:
            model = load_fid_inception(args.weights)
        progress = ProgressBar(0, Path(path).name or path, enabled=not args.quiet,
                               rate_unit="img")
        return compute_statistics(path, model, args.batch_size, args.dims, progress)

    if args.save_stats:
        stats = statistics(first)
        out = stats.save(second)
        if args.json:
            summary = {"saved": str(out), **_describe(first, stats.count), "dims": stats.dims}
            print(json.dumps(summary))
        else:
            print(f"saved the statistics of {stats.count} images ({stats.dims} features) to {out}")
        return 0
    stats_a = statistics(first)
    # The same folder twice (a sanity check) needs its features only once.
    same = Path(first).resolve() == Path(second).resolve()
    stats_b = stats_a if same else statistics(second)
    value = frechet_distance(stats_a, stats_b)
    if args.json:
        print(json.dumps({
            "fid": value,
            "dims": stats_a.dims,
            "a": _describe(first, stats_a.count),
            "b": _describe(second, stats_b.count),
        }))
    else:
        sides = []
        for path, stats in ((first, stats_a), (second, stats_b)):
            sides.append(f"{path}: {stats.count} images" if stats.count is not None
                         else f"{path}: statistics file")
        print(f"FID {value:.6f}  ({'; '.join(sides)}; {stats_a.dims} features)")
    return 0
