"""Looking inside the network: branch activations, channel order, normalisation, colour maps.

Everything here works on the taps of :meth:`InceptionV3.forward_with_taps` (converted to numpy
(H, W, C) maps of one image) and returns numpy arrays, so a script, a notebook and the desktop
app draw the same pictures. Activations of this network are outputs of ReLUs or of max-pools of
them, hence non-negative; the functions still accept negative values (0 stays the bottom of every
range, so "no response" always has the same colour).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..data.transforms import resize_bilinear
from ..model import InceptionV3, tap_names

SORT_ORDERS = ("index", "mean", "max")
NORMALISATIONS = ("channel", "branch", "module")


# --------------------------------------------------------------------------- the network's map


@dataclass(frozen=True)
class NetworkModule:
    """One entry of the network's navigator: a stem layer, an Inception module or the aux head."""

    name: str
    # "stem", "inception" or "aux".
    kind: str
    # The class that computes it ("BasicConv2d", "InceptionC", "max pool", ...).
    block: str
    # First line of that class's docstring (which figure of the paper it is).
    description: str
    # Keys of the maps shown for it: the branches of an Inception module, else the module itself.
    maps: tuple[str, ...]


def network_modules(model: InceptionV3) -> list[NetworkModule]:
    """Return the stem layers, ``Mixed_5b``..``Mixed_7c`` and the aux head in data-flow order."""
    names = tap_names(model.config)
    modules = []
    for name in names:
        if "." in name or name in ("avgpool", "fc"):
            continue
        if name.startswith("maxpool"):
            modules.append(
                NetworkModule(name, "stem", "max pool", "3x3 max pool, stride 2", (name,))
            )
            continue
        layer = getattr(model, name)
        doc = (type(layer).__doc__ or "").strip().splitlines()
        description = doc[0] if doc else ""
        if name == "AuxLogits":
            modules.append(
                NetworkModule(name, "aux", type(layer).__name__, description, AUX_HEAD_TAPS)
            )
        elif name.startswith("Mixed_"):
            branches = tuple(n for n in names if n.startswith(name + "."))
            modules.append(
                NetworkModule(name, "inception", type(layer).__name__, description, branches)
            )
        else:
            modules.append(NetworkModule(name, "stem", type(layer).__name__, description, (name,)))
    return modules


# The two convolutions inside the auxiliary classifier (paper Fig. 8), exposed as maps.
AUX_HEAD_TAPS = ("AuxLogits.conv0", "AuxLogits.conv1")


def aux_head_taps(model: InceptionV3, mixed_6e: mx.array) -> dict[str, mx.array]:
    """Return the aux head's inner maps from ``Mixed_6e``'s output: conv0 (5x5x128), conv1.

    Needs the 17x17 grid of a 299-pixel input, as the head itself does; raises ValueError
    otherwise (and when the model has no aux head).
    """
    if "AuxLogits" not in model:
        raise ValueError("this model has no auxiliary head")
    head = model.AuxLogits
    if min(mixed_6e.shape[1:3]) < 17:
        raise ValueError(
            f"the auxiliary head needs a 17x17 grid (inputs of 299 px), got "
            f"{mixed_6e.shape[1]}x{mixed_6e.shape[2]}"
        )
    conv0 = head.conv0(head.pool(mixed_6e))
    conv1 = head.conv1(conv0)
    return {AUX_HEAD_TAPS[0]: conv0, AUX_HEAD_TAPS[1]: conv1}


def module_maps(
    taps: Mapping[str, np.ndarray | mx.array], module: NetworkModule
) -> dict[str, np.ndarray]:
    """Return ``{key: (H, W, C) float32 numpy}`` of each map of ``module`` for one image.

    ``taps`` are one image's activations without the batch axis (as ``Predictor`` gives them;
    index a batch's taps first). Missing keys (the aux head below 299 px) are left out.
    """
    maps = {}
    for key in module.maps:
        if key in taps:
            value = taps[key]
            if isinstance(value, mx.array):
                value = value.astype(mx.float32)
            maps[key] = np.asarray(value, dtype=np.float32)
    return maps


# ------------------------------------------------------------------------------- statistics


def channel_order(maps: np.ndarray, by: str = "mean") -> np.ndarray:
    """Return channel indices of an (H, W, C) map: by index, or by mean/max response, highest first.

    Ties keep channel order (a stable sort), so equal channels never shuffle between redraws.
    """
    channels = maps.shape[-1]
    if by == "index":
        return np.arange(channels)
    if by == "mean":
        key = maps.reshape(-1, channels).mean(axis=0)
    elif by == "max":
        key = maps.reshape(-1, channels).max(axis=0)
    else:
        raise ValueError(f"unknown sort order {by!r}: choose one of {', '.join(SORT_ORDERS)}")
    return np.argsort(-key, kind="stable")


@dataclass(frozen=True)
class BranchShare:
    """How much of a module's activation one branch carries, beside its share of channels."""

    activation: float
    channels: float


def branch_shares(maps: Mapping[str, np.ndarray]) -> dict[str, BranchShare]:
    """Return each branch's fraction of the module's total activation and of its channels.

    The activation share is the branch's sum over all positions and channels divided by the
    module's (all maps share the grid, so sums compare like with like). A branch whose
    activation share exceeds its channel share responds more strongly than its width alone
    would explain. Negative values count by magnitude; an all-zero module gives zeros.
    """
    totals = {key: float(np.abs(value).sum(dtype=np.float64)) for key, value in maps.items()}
    widths = {key: value.shape[-1] for key, value in maps.items()}
    total = sum(totals.values())
    total_width = sum(widths.values())
    return {
        key: BranchShare(
            activation=totals[key] / total if total > 0 else 0.0,
            channels=widths[key] / total_width if total_width else 0.0,
        )
        for key in maps
    }


# ----------------------------------------------------------------------------- normalisation


def _scale(values: np.ndarray, low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    span = np.asarray(high - low, dtype=np.float32)
    safe = np.where(span > 0, span, 1.0)
    scaled = (values - low) / safe
    return np.where(span > 0, scaled, 0.0).astype(np.float32)


def normalise(maps: Mapping[str, np.ndarray], mode: str = "channel") -> dict[str, np.ndarray]:
    """Return the maps scaled to [0, 1]: per channel, per branch or across the whole module.

    The range of each group is [min(0, lowest), highest], so zero (no response) is always 0;
    a group with no spread becomes all zeros. "channel" shows every channel's pattern,
    "branch" compares channels within a branch, "module" compares branches with each other.
    """
    if mode not in NORMALISATIONS:
        raise ValueError(
            f"unknown normalisation {mode!r}: choose one of {', '.join(NORMALISATIONS)}"
        )
    if not maps:
        return {}
    if mode == "module":
        low = min(0.0, min(float(v.min()) for v in maps.values()))
        high = max(float(v.max()) for v in maps.values())
        return {key: _scale(v, low, high) for key, v in maps.items()}
    result = {}
    for key, value in maps.items():
        if mode == "branch":
            result[key] = _scale(value, min(0.0, float(value.min())), float(value.max()))
        else:
            flat = value.reshape(-1, value.shape[-1])
            low = np.minimum(flat.min(axis=0), 0.0)
            result[key] = _scale(value, low, flat.max(axis=0))
    return result


# ------------------------------------------------------------------------------- colour maps

# Degree-6 polynomial fits of matplotlib's perceptually uniform maps (van der Walt and Smith),
# by Matt Zucker (CC0); rows are the coefficients of t^0..t^6, columns R, G, B. The viridis fit
# is within 4 of 255 levels of matplotlib's 256-entry table everywhere.
_POLYNOMIALS = {
    "viridis": [
        [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
        [0.1050930431085774, 1.404613529898575, 1.384590162594685],
        [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
        [-4.634230498983486, -5.799100973351585, -19.33244095627987],
        [6.228269936347081, 14.17993336680509, 56.69055260068105],
        [4.776384997670288, -13.74514537774601, -65.35303263337234],
        [-5.435455855934631, 4.645852612178535, 26.3124352495832],
    ],
    "magma": [
        [-0.002136485053939582, -0.000749655052795221, -0.005386127855323933],
        [0.2516605407371642, 0.6775232436837668, 2.494026599312351],
        [8.353717279216625, -3.577719514958484, 0.3144679030132573],
        [-27.66873308576866, 14.26473078096533, -13.64921318813922],
        [52.17613981234068, -27.94360607168351, 12.94416944238394],
        [-50.76852536473588, 29.04658282127291, 4.23415299384598],
        [18.65570506591883, -11.48977351997711, -5.601961508734096],
    ],
    "inferno": [
        [0.0002189403691192265, 0.001651004631001012, -0.01948089843709184],
        [0.1065134194856116, 0.5639564367884091, 3.932712388889277],
        [11.60249308247187, -3.972853965665698, -15.9423941062914],
        [-41.70399613139459, 17.43639888205313, 44.35414519872813],
        [77.162935699427, -33.40235894210092, -81.80730925738993],
        [-71.31942824499214, 32.62606426397723, 73.20951985803202],
        [25.13112622477341, -12.24266895238567, -23.07032500287172],
    ],
    # Google's Turbo (Mikhailov 2019), its published degree-5 approximation.
    "turbo": [
        [0.13572138, 0.09140261, 0.10667330],
        [4.61539260, 2.19418839, 12.64194608],
        [-42.66032258, 4.84296658, -60.58204836],
        [132.13108234, -14.18503333, 110.36276771],
        [-152.94239396, 4.27729857, -89.90310912],
        [59.28637943, 2.82956604, 27.34824973],
    ],
}

COLORMAPS = ("viridis", "magma", "inferno", "turbo", "gray")


def _lookup_table(name: str) -> np.ndarray:
    t = np.linspace(0.0, 1.0, 256)
    if name in _POLYNOMIALS:
        coefficients = np.array(_POLYNOMIALS[name])
        powers = np.stack([t**p for p in range(len(coefficients))], axis=1)
        table = np.clip(powers @ coefficients, 0.0, 1.0) * 255.0
    elif name == "gray":
        table = np.repeat(t[:, None] * 255.0, 3, axis=1)
    else:
        raise ValueError(f"unknown colour map {name!r}: choose one of {', '.join(COLORMAPS)}")
    return np.round(table).astype(np.uint8)


# Each table packed as one uint32 per colour (R, G, B, 0 in memory order): a lookup then moves
# one 4-byte word per pixel, several times faster than gathering rows of three bytes.
_PACKED: dict[str, np.ndarray] = {}


def _pack(rgb: np.ndarray) -> np.ndarray:
    words = np.zeros(rgb.shape[:-1] + (4,), dtype=np.uint8)
    words[..., :3] = rgb
    return words.view(np.uint32)[..., 0]


def apply_colormap(
    values: np.ndarray, name: str = "viridis", background: Sequence[int] = (0, 0, 0)
) -> np.ndarray:
    """Return uint8 RGB (..., 3) for values in [0, 1] (clipped); NaN becomes ``background``."""
    if name not in _PACKED:
        _PACKED[name] = _pack(_lookup_table(name))
    scaled = np.array(values, dtype=np.float32)  # a copy, also of a 0-d value
    scaled *= np.float32(255.0)
    missing = np.isnan(scaled)
    scaled[missing] = 0.0
    np.clip(scaled, 0.0, 255.0, out=scaled)
    # Round half up (every value is >= 0 here).
    words = _PACKED[name][(scaled + np.float32(0.5)).astype(np.uint8)]
    if missing.any():
        words[missing] = _pack(np.asarray(background, dtype=np.uint8))
    return words[..., None].view(np.uint8)[..., :3]


# ----------------------------------------------------------------------------- channel grids


@dataclass(frozen=True)
class ChannelGrid:
    """Channels of one map tiled in rows: ``values`` (rows*(h+gap)-gap, cols*(w+gap)-gap).

    Gaps between tiles are NaN. ``order[i]`` is the channel drawn in tile i (row-major).
    """

    values: np.ndarray
    order: np.ndarray
    columns: int
    rows: int
    tile_height: int
    tile_width: int
    gap: int

    def channel_at(self, x: float, y: float) -> tuple[int, int, int] | None:
        """Return (channel, row, column) of the map under pixel (x, y) of ``values``, or None."""
        if x < 0 or y < 0:
            return None
        step_x, step_y = self.tile_width + self.gap, self.tile_height + self.gap
        tile_col, inner_x = divmod(int(x), step_x)
        tile_row, inner_y = divmod(int(y), step_y)
        if inner_x >= self.tile_width or inner_y >= self.tile_height or tile_col >= self.columns:
            return None
        tile = tile_row * self.columns + tile_col
        if tile >= len(self.order):
            return None
        return int(self.order[tile]), inner_y, inner_x

    def tile_origin(self, channel: int) -> tuple[int, int]:
        """Return the (x, y) pixel of the top-left corner of ``channel``'s tile."""
        tile = int(np.flatnonzero(self.order == channel)[0])
        row, col = divmod(tile, self.columns)
        return col * (self.tile_width + self.gap), row * (self.tile_height + self.gap)


def grid_columns(channels: int, tile_height: int, tile_width: int, aspect: float = 1.0) -> int:
    """Return the number of columns that makes a grid of ``channels`` tiles closest to ``aspect``.

    ``aspect`` is the wanted width / height of the whole grid.
    """
    best, best_error = 1, math.inf
    for columns in range(1, channels + 1):
        rows = math.ceil(channels / columns)
        error = abs(math.log((columns * tile_width) / (rows * tile_height) / aspect))
        if error < best_error:
            best, best_error = columns, error
    return best


def tile_channels(
    maps: np.ndarray,
    order: np.ndarray | None = None,
    columns: int | None = None,
    gap: int = 1,
    aspect: float = 1.0,
) -> ChannelGrid:
    """Return a :class:`ChannelGrid` of an (H, W, C) map, channels in ``order`` (default 0..C-1)."""
    height, width, channels = maps.shape
    order = np.arange(channels) if order is None else np.asarray(order)
    columns = columns or grid_columns(len(order), height, width, aspect)
    rows = math.ceil(len(order) / columns)
    values = np.full(
        (rows * (height + gap) - gap, columns * (width + gap) - gap), np.nan, dtype=np.float32
    )
    for tile, channel in enumerate(order):
        row, col = divmod(tile, columns)
        top, left = row * (height + gap), col * (width + gap)
        values[top : top + height, left : left + width] = maps[:, :, channel]
    return ChannelGrid(values, order, columns, rows, height, width, gap)


# ------------------------------------------------------------------------ maps over the image


def upsample(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Return a 2-D map resized bilinearly to ``size`` = (height, width), pixel centres aligned.

    The same sampling as ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)`` (:func:`mlx_inception.data.transforms.resize_bilinear`), so an 8x8
    map lands on the 299x299 crop where its cells are.
    """
    return resize_bilinear(values, size)


def overlay(
    image: np.ndarray, values: np.ndarray, colormap: str = "turbo", opacity: float = 0.5
) -> np.ndarray:
    """Return uint8 RGB: ``image`` (H, W, 3) blended with a [0, 1] map drawn in ``colormap``.

    The map is resized to the image with :func:`upsample`; ``opacity`` 0 gives the image, 1 the
    coloured map.
    """
    image = np.asarray(image)
    height, width = image.shape[:2]
    colour = apply_colormap(upsample(values, (height, width)), colormap).astype(np.float32)
    opacity = float(np.clip(opacity, 0.0, 1.0))
    blended = image[..., :3].astype(np.float32) * (1 - opacity) + colour * opacity
    return np.round(blended).astype(np.uint8)


__all__ = [
    "AUX_HEAD_TAPS",
    "COLORMAPS",
    "NORMALISATIONS",
    "SORT_ORDERS",
    "BranchShare",
    "ChannelGrid",
    "NetworkModule",
    "apply_colormap",
    "aux_head_taps",
    "branch_shares",
    "channel_order",
    "grid_columns",
    "module_maps",
    "network_modules",
    "normalise",
    "overlay",
    "tile_channels",
    "upsample",
]
