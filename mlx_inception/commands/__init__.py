"""One module per ``mlx-inception`` subcommand: argument parsing and output, nothing more."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default in ``--help``, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default in (None, argparse.SUPPRESS, False):
            return action.help or ""
        return super()._get_help_string(action)
