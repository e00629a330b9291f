"""One module per ``mlx-inception`` subcommand: argument parsing and output, nothing more."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default in ``--help``, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default in (None, argparse.SUPPRESS, False):
            return action.help or ""
        return super()._get_help_string(action)


@contextlib.contextmanager
def hub_messages_on_stderr(enabled: bool = True) -> Iterator[None]:
    """Show the Hub code's progress messages ("downloading ...", "uploading ...") on stderr,
    bare, while the block runs (``enabled=False``: as they were, e.g. for ``--quiet``)."""
    log = logging.getLogger("mlx_inception.checkpoints.hub")
    if not enabled:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous_level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)
