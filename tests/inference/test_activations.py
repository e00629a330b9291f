"""Branch maps, channel order, normalisation, colour maps, grids and overlays (no Qt)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_inception import InceptionV3, InceptionV3Config, tap_names
from mlx_inception.inference.activations import (
    AUX_HEAD_TAPS,
    COLORMAPS,
    apply_colormap,
    aux_head_taps,
    branch_shares,
    channel_order,
    grid_columns,
    module_maps,
    network_modules,
    normalise,
    overlay,
    tile_channels,
    upsample,
)


@pytest.fixture(scope="module")
def model(untrained_model):
    return untrained_model


@pytest.fixture(scope="module")
def taps_107(model):
    """One 107-pixel image's taps without the batch axis, as numpy (what Predictor gives)."""
    x = mx.array(np.random.default_rng(0).standard_normal((1, 107, 107, 3)).astype(np.float32))
    _, taps = model.forward_with_taps(x)
    mx.eval(taps)
    return {key: np.asarray(value[0]) for key, value in taps.items()}


# ------------------------------------------------------------------------- the network's map


def test_network_modules_list_stem_mixed_modules_and_aux_head_in_data_flow_order(model):
    modules = network_modules(model)
    names = [m.name for m in modules]
    expected = [n for n in tap_names(model.config) if "." not in n and n not in ("avgpool", "fc")]
    assert names == expected
    assert names.index("AuxLogits") == names.index("Mixed_6e") + 1
    kinds = {m.name: m.kind for m in modules}
    assert kinds["Conv2d_1a_3x3"] == kinds["maxpool2"] == "stem"
    assert kinds["Mixed_5b"] == "inception" and kinds["AuxLogits"] == "aux"


def test_each_inception_module_lists_its_branches_and_names_its_figure(model):
    modules = {m.name: m for m in network_modules(model)}
    assert modules["Mixed_5b"].maps == tuple(
        f"Mixed_5b.{b}" for b in ("branch1x1", "branch5x5", "branch3x3dbl", "branch_pool")
    )
    assert modules["Mixed_6a"].maps == tuple(
        f"Mixed_6a.{b}" for b in ("branch3x3", "branch3x3dbl", "branch_pool")
    )
    assert modules["Mixed_6b"].block == "InceptionC"
    assert "Figure 6" in modules["Mixed_6b"].description
    assert "Figure 7" in modules["Mixed_7c"].description
    assert modules["Conv2d_2a_3x3"].maps == ("Conv2d_2a_3x3",)
    assert modules["AuxLogits"].maps == AUX_HEAD_TAPS


def test_network_without_aux_head_has_no_aux_entry():
    modules = network_modules(InceptionV3(InceptionV3Config(aux_logits=False), init_weights=False))
    assert "AuxLogits" not in [m.name for m in modules]


def test_branch_maps_concatenate_to_the_module_output(model, taps_107):
    for module in network_modules(model):
        if module.kind != "inception":
            continue
        maps = module_maps(taps_107, module)
        assert list(maps) == list(module.maps)
        np.testing.assert_array_equal(
            np.concatenate(list(maps.values()), axis=-1), taps_107[module.name]
        )


def test_module_maps_leave_out_maps_the_input_size_does_not_have(model, taps_107):
    aux = next(m for m in network_modules(model) if m.kind == "aux")
    assert module_maps(taps_107, aux) == {}


def test_aux_head_maps_lead_to_the_aux_logits_the_network_computes(model):
    x = mx.array(np.random.default_rng(1).standard_normal((1, 299, 299, 3)).astype(np.float32))
    _, taps = model.forward_with_taps(x)
    inner = aux_head_taps(model, taps["Mixed_6e"])
    assert inner["AuxLogits.conv0"].shape == (1, 5, 5, 128)
    assert inner["AuxLogits.conv1"].shape == (1, 1, 1, 768)
    # conv1's output, averaged and put through the head's fc, is the aux logits tap; float32
    # sums in a different order differ by rounding only (relative 1e-5).
    logits = model.AuxLogits.fc(inner["AuxLogits.conv1"].mean(axis=(1, 2)))
    np.testing.assert_allclose(np.asarray(logits), np.asarray(taps["AuxLogits"]),
                               rtol=1e-5, atol=1e-5 * float(mx.abs(taps["AuxLogits"]).max()))


def test_aux_head_maps_need_the_17x17_grid_of_a_299_pixel_input(model, taps_107):
    with pytest.raises(ValueError, match="17x17"):
        aux_head_taps(model, mx.array(taps_107["Mixed_6e"][None]))


# ------------------------------------------------------------------------------- statistics


def _three_channels() -> np.ndarray:
    maps = np.zeros((2, 2, 3), np.float32)
    maps[:, :, 0] = [[1, 1], [1, 1]]  # mean 1, max 1
    maps[:, :, 1] = [[0, 0], [0, 8]]  # mean 2, max 8
    maps[:, :, 2] = [[3, 0], [0, 0]]  # mean 0.75, max 3
    return maps


def test_channel_order_by_mean_and_by_max_puts_the_strongest_first():
    maps = _three_channels()
    assert channel_order(maps, "mean").tolist() == [1, 0, 2]
    assert channel_order(maps, "max").tolist() == [1, 2, 0]
    assert channel_order(maps, "index").tolist() == [0, 1, 2]


def test_channel_order_keeps_equal_channels_in_index_order():
    assert channel_order(np.ones((3, 3, 5), np.float32), "mean").tolist() == [0, 1, 2, 3, 4]


def test_channel_order_rejects_unknown_orders():
    with pytest.raises(ValueError, match="mean"):
        channel_order(_three_channels(), "median")


def test_branch_shares_are_fractions_of_the_module_activation_and_of_its_channels():
    maps = {"a": np.full((2, 2, 1), 3.0, np.float32), "b": np.full((2, 2, 3), 1.0, np.float32)}
    shares = branch_shares(maps)
    assert shares["a"].activation == pytest.approx(12 / 24)
    assert shares["b"].activation == pytest.approx(12 / 24)
    assert shares["a"].channels == pytest.approx(1 / 4)
    assert shares["b"].channels == pytest.approx(3 / 4)


def test_branch_shares_of_a_silent_module_are_zero():
    shares = branch_shares({"a": np.zeros((2, 2, 1), np.float32)})
    assert shares["a"].activation == 0.0


# ----------------------------------------------------------------------------- normalisation


def test_per_channel_normalisation_scales_each_channel_to_its_own_maximum():
    scaled = normalise({"b": _three_channels()}, "channel")["b"]
    assert scaled.reshape(-1, 3).max(axis=0).tolist() == [1.0, 1.0, 1.0]
    assert scaled[0, 0, 1] == 0.0  # zero stays zero
    assert scaled[0, 0, 2] == 1.0


def test_per_branch_normalisation_keeps_the_ratios_between_channels():
    scaled = normalise({"b": _three_channels()}, "branch")["b"]
    np.testing.assert_allclose(scaled, _three_channels() / 8.0)


def test_per_module_normalisation_keeps_the_ratios_between_branches():
    maps = {"weak": np.full((2, 2, 2), 1.0, np.float32),
            "strong": np.full((2, 2, 1), 4.0, np.float32)}
    scaled = normalise(maps, "module")
    assert float(scaled["weak"].max()) == pytest.approx(0.25)
    assert float(scaled["strong"].max()) == 1.0


def test_normalisation_of_a_flat_map_gives_zeros_not_nan():
    scaled = normalise({"b": np.full((2, 2, 2), 5.0, np.float32)}, "branch")["b"]
    # A constant positive map spans [0, 5]: it is all at the top, not undefined.
    assert np.all(scaled == 1.0)
    zeros = normalise({"b": np.zeros((2, 2, 2), np.float32)}, "channel")["b"]
    assert np.all(zeros == 0.0) and not np.isnan(zeros).any()


def test_normalisation_maps_negative_values_from_the_lowest_one():
    scaled = normalise({"b": np.array([[[-2.0], [2.0]]], np.float32)}, "branch")["b"]
    assert scaled.ravel().tolist() == [0.0, 1.0]


def test_normalisation_rejects_unknown_modes():
    with pytest.raises(ValueError, match="channel, branch, module"):
        normalise({"b": _three_channels()}, "image")


# ------------------------------------------------------------------------------- colour maps


def test_viridis_matches_matplotlibs_table_within_four_levels():
    # Entries 0, 64, 128, 192 and 255 of matplotlib's 256-colour viridis table (_cm_listed).
    published = {0: (68, 1, 84), 64: (59, 82, 139), 128: (33, 145, 140), 192: (94, 201, 98),
                 255: (253, 231, 37)}
    rgb = apply_colormap(np.array([i / 255 for i in published]), "viridis").astype(int)
    assert np.abs(rgb - np.array(list(published.values()))).max() <= 4


@pytest.mark.parametrize("name", ["viridis", "magma", "inferno"])
def test_perceptual_colour_maps_get_lighter_from_0_to_1(name):
    rgb = apply_colormap(np.linspace(0, 1, 9), name).astype(float)
    luminance = rgb @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(np.diff(luminance) > 0)


def test_turbo_runs_from_blue_through_green_to_red():
    low, middle, high = apply_colormap(np.array([0.15, 0.5, 0.9]), "turbo").astype(int)
    assert low[2] > low[0] and middle[1] > max(middle[0], middle[2]) and high[0] > high[2]


def test_gray_colour_map_is_the_value_in_every_channel():
    rgb = apply_colormap(np.array([0.0, 0.5, 1.0]), "gray")
    assert rgb.tolist() == [[0, 0, 0], [128, 128, 128], [255, 255, 255]]


def test_colour_maps_clip_out_of_range_values_and_paint_nan_as_background():
    rgb = apply_colormap(np.array([-1.0, 2.0, np.nan]), "gray", background=(1, 2, 3))
    assert rgb.tolist() == [[0, 0, 0], [255, 255, 255], [1, 2, 3]]


def test_every_listed_colour_map_exists_and_unknown_names_are_refused():
    for name in COLORMAPS:
        assert apply_colormap(np.zeros((2, 2)), name).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="viridis"):
        apply_colormap(np.zeros(2), "jet")


# ----------------------------------------------------------------------------- channel grids


def test_every_grid_pixel_leads_back_to_its_channel_and_position():
    maps = np.random.default_rng(2).random((3, 4, 7)).astype(np.float32)
    order = channel_order(maps, "max")
    grid = tile_channels(maps, order, columns=3, gap=1)
    assert (grid.rows, grid.columns) == (3, 3)
    assert grid.values.shape == (3 * 4 - 1, 3 * 5 - 1)
    seen = set()
    for y in range(grid.values.shape[0]):
        for x in range(grid.values.shape[1]):
            found = grid.channel_at(x + 0.5, y + 0.5)
            if found is None:
                assert np.isnan(grid.values[y, x])  # a gap or an empty tile
                continue
            channel, row, column = found
            assert grid.values[y, x] == maps[row, column, channel]
            seen.add(channel)
    assert seen == set(range(7))
    first = int(order[0])
    assert grid.tile_origin(first) == (0, 0)
    assert grid.channel_at(-1, 0) is None and grid.channel_at(0, 1000) is None


def test_grid_columns_follow_the_wanted_aspect():
    assert grid_columns(64, 8, 8, aspect=1.0) == 8
    assert grid_columns(64, 8, 8, aspect=4.0) == 16
    assert grid_columns(1, 8, 8, aspect=3.0) == 1


# ------------------------------------------------------------------------ maps over the image


def test_upsample_matches_torchs_bilinear_interpolation():
    torch = pytest.importorskip("torch")
    values = np.random.default_rng(3).random((8, 8)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(values)[None, None], size=(299, 301), mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    # The same float32 taps and weights as PyTorch's kernel (data.transforms.resize_bilinear,
    # which FID's resize uses too): within 2 float32 ulps of 1 (measured 1 ulp).
    np.testing.assert_allclose(upsample(values, (299, 301)), expected, rtol=0, atol=2.4e-7)


def test_upsample_to_the_same_size_changes_nothing():
    values = np.random.default_rng(4).random((5, 7)).astype(np.float32)
    np.testing.assert_allclose(upsample(values, (5, 7)), values, atol=1e-7)


def test_overlay_blends_the_image_and_the_coloured_map_by_opacity():
    image = np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    values = np.random.default_rng(6).random((4, 6)).astype(np.float32)
    assert np.array_equal(overlay(image, values, "viridis", 0.0), image)
    coloured = apply_colormap(upsample(values, (20, 30)), "viridis")
    assert np.array_equal(overlay(image, values, "viridis", 1.0), coloured)
    half = overlay(image, values, "viridis", 0.5).astype(int)
    assert np.abs(half - (image.astype(int) + coloured) / 2).max() <= 0.5 + 1e-9
