"""The training curves: axes that hold every point they draw."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from mlx_inception.training.curves import draw_curves, log_scale, nice_ticks


def test_ticks_span_the_range_the_issue_found_clipped():
    ticks = nice_ticks(3.61, 1742.81)  # gave [0, 500, 1000, 1500]: the top point off the panel
    assert ticks[0] <= 3.61 and ticks[-1] >= 1742.81
    assert ticks == [0, 500, 1000, 1500, 2000]


def test_ticks_hold_every_value_of_many_random_ranges():
    rng = np.random.default_rng(0)
    for _ in range(5000):
        exponent = rng.uniform(-8, 9)
        low = rng.uniform(-1, 1) * 10 ** exponent
        high = low + abs(rng.normal()) * 10 ** rng.uniform(exponent - 6, exponent + 1)
        count = int(rng.integers(2, 8))
        ticks = nice_ticks(low, high, count)
        assert ticks[0] <= low and ticks[-1] >= high, (low, high, count, ticks)
        steps = np.diff(ticks)
        assert np.all(steps > 0) and np.allclose(steps, steps[0], rtol=1e-6), ticks
        # Round, and not many more of them than asked for.
        assert len(ticks) <= 2 * count + 2, (low, high, count, ticks)


def test_degenerate_ranges_still_give_an_axis():
    assert nice_ticks(2.0, 2.0)[0] <= 2.0 <= nice_ticks(2.0, 2.0)[-1]
    assert nice_ticks(math.nan, 1.0) == [0.0, 1.0]


@pytest.mark.parametrize(("values", "expected"), [
    ([2.3, 8.4e7], True),  # a loss of 2 beside 1e7: a linear axis flattens the small ones
    ([2.3, 1.5], False),
    ([0.0, 5.0], False),  # zero has no logarithm
    ([], False),
])
def test_the_loss_axis_is_logarithmic_when_the_values_span_decades(values, expected):
    assert log_scale(values) is expected


def test_curves_with_losses_spanning_decades_are_drawn(tmp_path):
    records = [{"epoch": 1, "train_loss": 2.3, "val_loss": 8.4e7, "train_top1": 0.1,
                "val_top1": 0.1, "val_top5": 0.5},
               {"epoch": 2, "train_loss": 1.9, "val_loss": 2.1, "train_top1": 0.3,
                "val_top1": 0.35, "val_top5": 0.8}]
    path = draw_curves(records, tmp_path / "curves.png")
    with Image.open(path) as image:
        pixels = np.array(image.convert("RGB"))
    # Both loss series are drawn inside the left panel: its orange (validation) points exist.
    orange = np.all(pixels[:, :550] == (255, 127, 14), axis=-1)
    assert orange.sum() > 20
