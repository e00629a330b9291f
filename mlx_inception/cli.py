"""``mlx-inception``: one command, a subcommand per job; each lives in ``commands/``."""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys

from . import __version__
from .errors import InceptionError

# Subcommand name -> module in mlx_inception.commands defining ``add_parser(subparsers)``.
# Command modules import heavy things (MLX, torch) inside ``run``, so `--help` stays fast.
COMMANDS = {
    "convert": "convert",
    "export": "export",
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


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports a mistyped command line in one line.

    argparse prints the whole usage (twenty lines for ``train``) before its message; the
    message and where to read more are enough. The exit status stays argparse's 2.
    """

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every available subcommand."""
    parser = _Parser(
        prog="mlx-inception",
        description="Inception-v3 in MLX: convert, export, predict, evaluate, train, push and "
        "download Hub weights, FID and Inception Score, benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS.values():
        importlib.import_module(f".commands.{module_name}", __package__).add_parser(subparsers)
    return parser


def _never_fail_on_names() -> None:
    """Let stdout and stderr show any text: a file name that is not valid UTF-8 (kept by
    Python as lone surrogates) would otherwise stop a command half-way under a strict UTF-8
    stdout (``PYTHONIOENCODING=utf-8:strict``), its later results unreported. Such characters
    are written as backslash escapes instead."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 on success, 1 on any failure, 130 on Ctrl-C)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _never_fail_on_names()
    try:
        return int(args.func(args) or 0)
    except InceptionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as shell tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that Python's final flush cannot fail again
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the signal
    except OSError as error:  # permission denied, disk full, ...: say which file, no traceback
        where = f"{error.filename}: " if getattr(error, "filename", None) else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
