"""The command line's progress bar: drawn in place on a terminal, silent or sparse when piped."""

from __future__ import annotations

import io

from mlx_inception.progress import ProgressBar, format_duration


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_ends_its_line_once_complete():
    stream = Terminal()
    bar = ProgressBar(3, "predict", stream=stream, rate_unit="img")
    for done in range(1, 4):
        bar.update(done)
    bar.close()  # already closed by reaching the total: nothing more
    text = stream.getvalue()
    assert text.startswith("\rpredict [") and text.endswith("\n") and text.count("\n") == 1
    last = text.rsplit("\r", 1)[1]
    assert "3/3" in last and "#" * 24 in last and "img/s" in last


def test_redraws_are_at_most_ten_a_second_but_the_last_is_always_drawn():
    stream = Terminal()
    bar = ProgressBar(1000, stream=stream)
    for done in range(1, 1001):
        bar.update(done)
    assert stream.getvalue().count("\r") < 50  # 1000 updates within far less than 5 s
    assert "1000/1000" in stream.getvalue()


def test_piped_output_gets_nothing_unless_lines_are_asked_for():
    silent = io.StringIO()
    bar = ProgressBar(8, "fid", stream=silent)
    for done in range(1, 9):
        bar(done, 8)
    bar.close()
    assert silent.getvalue() == ""

    log = io.StringIO()
    bar = ProgressBar(8, "epoch 1/2", stream=log, piped_lines=True)
    for done in range(1, 9):
        bar.update(done, info="loss 1.0")
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [line.split("] ")[1].split()[0] for line in lines] == ["1/8", "3/8", "5/8", "7/8",
                                                                  "8/8"]
    assert all(line.endswith("loss 1.0") for line in lines)


def test_quiet_draws_nothing_even_on_a_terminal():
    stream = Terminal()
    bar = ProgressBar(2, stream=stream, enabled=False, piped_lines=True)
    bar.update(1)
    bar.clear()
    bar.update(2)
    bar.close()
    assert stream.getvalue() == ""


def test_clear_erases_the_bar_so_a_printed_line_stands_alone():
    stream = Terminal()
    bar = ProgressBar(4, "predict", stream=stream)
    bar.update(1)
    bar.clear()
    stream.write("chelsea.jpg\n")
    bar.update(2)
    assert stream.getvalue().split("\r\x1b[K")[1].startswith("chelsea.jpg\n")
    assert "2/4" in stream.getvalue().rsplit("\r", 1)[1]


def test_a_total_given_with_the_count_replaces_the_first_one():
    stream = Terminal()
    bar = ProgressBar(0, "real", stream=stream)
    bar(50, 120)
    assert "50/120" in stream.getvalue()


def test_durations_read_as_minutes_or_hours():
    assert format_duration(7) == "0:07"
    assert format_duration(3599) == "59:59"
    assert format_duration(3600 + 62) == "1:01:02"
    assert format_duration(-3) == "0:00"
