"""``mlx-inception``: one command, a subcommand per job; each lives in ``commands/``."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import InceptionError

# Subcommand name -> module in mlx_inception.commands defining ``add_parser(subparsers)``.
# Command modules import heavy things (MLX, torch) inside ``run``, so `--help` stays fast.
COMMANDS = {
    "convert": "convert",
    "predict": "predict",
    "evaluate": "evaluate",
    "list": "list_weights",
    "download": "download",
    "push": "push",
    "train": "train",
    "bench": "bench",
    "fid": "fid",
    "inception-score": "inception_score",
}


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="mlx-inception",
        description="Inception-v3 in MLX: convert, predict, evaluate, train, Hub weights.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        importlib.import_module(f".commands.{module_name}", __package__).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 on success, 1 on any failure, 130 on Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InceptionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # permission denied, disk full, ...: say which file, no traceback
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
