"""``mlx-inception bench``: this project against torchvision's inception_v3, in one run."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import InceptionError
from . import HelpFormatter

# Inception-v3's smallest input: below 75 pixels a stride-2 layer has nothing left to cover.
MIN_IMAGE_SIZE = 75


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure speed and memory against torchvision's inception_v3",
        description=(
            "Measure inference images/s (per batch size and dtype) and a training step's "
            "images/s of this project (plain model and the fast inference path) and of "
            "torchvision's inception_v3, side by side: each measurement in a fresh process "
            "with the same thread count, frameworks alternated round by round. Prints medians, "
            "the ratio to torchvision, the spread of per-round ratios, peak memory, and which "
            "BLAS and MLX device were used. Needs torch and torchvision for the comparison "
            "(pip install -e '.[dev]'); without them only MLX is measured."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8],
                        help="inference batch sizes")
    parser.add_argument("--image-size", type=int, default=299, help="inference input size")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16"],
                        choices=["float32", "float16", "bfloat16"], help="inference dtypes")
    parser.add_argument("--train-batch", type=int, default=16,
                        help="training step batch size (0: no training cases)")
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[299, 75],
                        help="training input sizes (the aux head is used at 299 and above)")
    parser.add_argument("--frameworks", nargs="+", default=["torch", "mlx", "mlx-fast"],
                        choices=["torch", "mlx", "mlx-fast"],
                        help="what to measure: torchvision, the plain MLX model, the fast path")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; each runs every case once per framework")
    parser.add_argument("--iterations", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed calls first (tracing, compilation, caches)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for torch, MKL and OpenMP in every process")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds of timed calls per measurement before stopping early")
    parser.add_argument("--output", type=Path, default=None,
                        help="also write the full results (every call's time) as JSON here")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=run)


def check_arguments(args: argparse.Namespace) -> None:
    """Raise InceptionError (one line) for a count or size that cannot be measured."""
    at_least = [("--rounds", [args.rounds], 1), ("--iterations", [args.iterations], 1),
                ("--batch-sizes", args.batch_sizes, 1), ("--warmup", [args.warmup], 0),
                ("--train-batch", [args.train_batch], 0), ("--threads", [args.threads], 1),
                ("--image-size", [args.image_size], MIN_IMAGE_SIZE),
                ("--train-sizes", args.train_sizes, MIN_IMAGE_SIZE)]
    for flag, values, minimum in at_least:
        for value in values:
            if value < minimum:
                raise InceptionError(f"{flag} must be at least {minimum}, not {value}")
    if not args.budget > 0:
        raise InceptionError(f"--budget must be more than 0 seconds, not {args.budget}")


def run(args: argparse.Namespace) -> int:
    from importlib.util import find_spec

    from .. import benchmark
    from ..atomic import check_destination, write_text_atomically

    check_arguments(args)
    if args.output:
        # Minutes of measurements must not be lost to a bad path found at the end.
        if args.output.is_dir():
            raise InceptionError(f"--output {args.output} is a folder: name a file")
        check_destination(args.output)

    frameworks = list(args.frameworks)
    if "torch" in frameworks and (find_spec("torch") is None or find_spec("torchvision") is None):
        print("note: torch/torchvision not installed: measuring MLX only", file=sys.stderr)
        frameworks.remove("torch")
    cases = benchmark.default_cases(args.batch_sizes, args.image_size, args.dtypes,
                                    args.train_batch, args.train_sizes)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    measurements = benchmark.run_benchmark(
        cases, frameworks, rounds=args.rounds, iterations=args.iterations, warmup=args.warmup,
        threads=args.threads, budget_s=args.budget, progress=progress,
    )
    rows = benchmark.summarize(measurements)
    info = benchmark.environment(measurements, args.threads)
    result = {
        "environment": info,
        "rows": [row.to_dict() for row in rows],
        "measurements": [
            {**{k: v for k, v in vars(m).items() if k != "case"}, "case": m.case.name}
            for m in measurements
        ],
    }
    # The results are printed first: if writing the file fails after all, they are on screen.
    if args.json:
        print(json.dumps({"environment": info, "rows": result["rows"]}), flush=True)
    else:
        print(benchmark.format_environment(info))
        print()
        print(benchmark.format_table(rows), flush=True)
    if args.output:
        write_text_atomically(args.output, json.dumps(result, indent=1))
    failed = [m for m in measurements if m.error and not m.times]
    crashed = [m for m in failed if m.error.startswith(("worker exited", "timed out"))]
    for m in failed:
        print(f"note: {m.case.name} {m.framework}: {m.error}", file=sys.stderr)
    return 1 if crashed else 0
