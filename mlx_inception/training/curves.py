"""The training curves as a PNG, drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

# (metric key, legend label, colour); a metric missing from every record is not drawn.
PANELS = (
    ("loss", (
        ("train_loss", "train loss", (31, 119, 180)),
        ("val_loss", "validation loss", (255, 127, 14)),
    )),
    ("accuracy (%)", (
        ("train_top1", "train top-1", (31, 119, 180)),
        ("val_top1", "validation top-1", (255, 127, 14)),
        ("val_top5", "validation top-5", (44, 160, 44)),
    )),
)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Return round tick values from at most ``low`` to at least ``high`` (1, 2 or 5 times a
    power of ten apart), so that every value in [low, high] lies within the ticks' span."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    digits = 1 - math.floor(math.log10(step))  # a tenth of the step: drops float noise only
    index = math.floor(low / step)
    if index * step > low:  # low / step rounded up by a last-bit error
        index -= 1
    ticks = [round(index * step, digits)]
    while ticks[-1] < high:  # up to the first tick at or past high: nothing drawn off the panel
        ticks.append(round((index + len(ticks)) * step, digits))
    if ticks[0] > low:  # rounding moved the first tick past low
        ticks.insert(0, round((index - 1) * step, digits))
    return ticks


def log_scale(values: Sequence[float]) -> bool:
    """Return True when ``values`` are positive and span two decades or more: drawn on a linear
    axis, the small ones (a loss of 2 beside one of 1e7) would all sit on the bottom line."""
    return bool(values) and min(values) > 0 and max(values) / min(values) >= 100


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def _panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    series: Sequence[tuple[str, list[tuple[float, float]], tuple[int, int, int]]],
    epochs: tuple[float, float],
) -> None:
    left, top, right, bottom = box
    font, small = _font(15), _font(12)
    values = [v for _, points, _ in series for _, v in points]
    log = log_scale(values)
    draw.text((left, top - 24), title + (" (log scale)" if log else ""), fill=(0, 0, 0), font=font)
    if not values:
        draw.text((left + 10, (top + bottom) // 2), "no data yet", fill=(120, 120, 120), font=font)
        return
    scale = math.log10 if log else float  # the axis is drawn in scaled values
    if log:  # a tick at every power of ten (a whole number of decades)
        low, high = math.log10(min(values)), math.log10(max(values))
        y_ticks = [float(e) for e in range(math.floor(low), math.ceil(high) + 1)]
        y_ticks = y_ticks if len(y_ticks) > 1 else [y_ticks[0], y_ticks[0] + 1]
    else:
        y_ticks = nice_ticks(min(values), max(values))
    x_ticks = nice_ticks(*epochs, count=6)
    y_low, y_high = y_ticks[0], y_ticks[-1]
    x_low, x_high = x_ticks[0], x_ticks[-1]

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x_low) / (x_high - x_low) * (right - left)
        py = bottom - (scale(y) - y_low) / (y_high - y_low) * (bottom - top)
        return px, py

    for y in y_ticks:
        py = bottom - (y - y_low) / (y_high - y_low) * (bottom - top)
        draw.line([(left, py), (right, py)], fill=(230, 230, 230))
        label = f"{10 ** y:g}" if log else f"{y:g}"
        draw.text((left - 6, py), label, fill=(60, 60, 60), font=small, anchor="rm")
    for x in x_ticks:
        px = left + (x - x_low) / (x_high - x_low) * (right - left)
        draw.line([(px, bottom), (px, bottom + 4)], fill=(60, 60, 60))
        draw.text((px, bottom + 6), f"{x:g}", fill=(60, 60, 60), font=small, anchor="mt")
    draw.rectangle(box, outline=(60, 60, 60))
    draw.text(((left + right) // 2, bottom + 22), "epoch", fill=(60, 60, 60), font=small,
              anchor="mt")
    for _, points, colour in series:
        pixels = [to_pixel(x, y) for x, y in points]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        for px, py in pixels:
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
    # The legend on a white box, so lines running under it stay readable.
    draw.rectangle([right - 156, top + 4, right - 6, top + 12 + 18 * len(series)],
                   fill=(255, 255, 255), outline=(200, 200, 200))
    for index, (label, _, colour) in enumerate(series):
        legend_y = top + 8 + 18 * index
        draw.line([(right - 150, legend_y + 7), (right - 130, legend_y + 7)], fill=colour, width=3)
        draw.text((right - 124, legend_y), label, fill=(0, 0, 0), font=small)


def draw_curves(records: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write a PNG of loss and accuracy per epoch from metrics records; return its path.

    Accuracies are stored as fractions and drawn as percentages. Written atomically.
    """
    width, height = 1100, 440
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    epochs = [float(r["epoch"]) for r in records] or [0.0, 1.0]
    span = (min(0.0, min(epochs)), max(max(epochs), 1.0))
    for index, (title, metrics) in enumerate(PANELS):
        series = []
        for key, label, colour in metrics:
            scale = 100.0 if "top" in key else 1.0
            points = [
                (float(r["epoch"]), float(r[key]) * scale)
                for r in records
                if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
            ]
            if points:
                series.append((label, points, colour))
        left = 70 + index * (width // 2)
        _panel(draw, (left, 40, left + width // 2 - 110, height - 60), title, series, span)
    path = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=".curves-", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        image.save(temporary, format="PNG")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
