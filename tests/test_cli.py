"""The command line as a whole: help for every subcommand, one-line usage errors, pipes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mlx_inception.cli import COMMANDS, main


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: mlx-inception {command}")


@pytest.mark.parametrize("arguments", [
    ["train", "--epochs", "ten"],
    ["predict", "photo.jpg", "--dtype", "float64"],
    ["no-such-command"],
    [],
])
def test_a_mistyped_command_line_is_one_line_pointing_at_help(arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2  # argparse's status for usage errors
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert "--help)" in captured.err


def test_a_count_that_is_not_a_number_says_so_in_words(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "photo.jpg", "--batch-size", "abc"])
    assert capsys.readouterr().err == (
        "error: argument --batch-size: must be a whole number, not 'abc' "
        "(see mlx-inception predict --help)\n")


@pytest.mark.slow  # a fresh interpreter
def test_a_closed_pipe_stops_quietly():
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`| head -1`) has gone before anything is written
    try:
        result = subprocess.run(
            [sys.executable, "-m", "mlx_inception", "list", "--json"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 141  # 128 + SIGPIPE, as a shell reports it
