"""The desktop app, offscreen (QT_QPA_PLATFORM=offscreen, set in conftest): every way in,
predictions, the network views, Grad-CAM, exports, weights, errors, and its worker threads.

Most tests use an Inception-v3 saved with a 107-pixel preprocessing (a 107 px forward is about
ten times cheaper than 299); one fixture runs the randomly initialised 299-pixel network the
app falls back to without weights.
"""

from __future__ import annotations

import csv
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

import mlx.core as mx  # noqa: E402
import mlx_inception_app.window as window_module  # noqa: E402
from mlx_inception_app.widgets import to_qimage  # noqa: E402
from mlx_inception_app.window import MainWindow  # noqa: E402
from mlx_inception_app.workers import Worker  # noqa: E402
from PIL import Image  # noqa: E402
from PySide6.QtCore import QEvent, QMimeData, QPointF, QSettings, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDropEvent, QImage, QMouseEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QDialog, QPushButton  # noqa: E402

import mlx_inception  # noqa: E402
from mlx_inception import InceptionV3, InceptionV3Config, Preprocessing  # noqa: E402
from mlx_inception.checkpoints.store import save_model  # noqa: E402
from mlx_inception.data.images import load_image  # noqa: E402
from mlx_inception.data.transforms import center_crop, preprocess  # noqa: E402
from mlx_inception.inference.activations import (  # noqa: E402
    apply_colormap,
    channel_order,
    normalise,
    overlay,
)
from mlx_inception.inference.gradcam import grad_cam  # noqa: E402
from mlx_inception.inference.predictor import Predictor  # noqa: E402

# Generous: the shared CI machine may be slow; a passing test takes a fraction of this.
WAIT_MS = 60_000


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def small_weights(module_tmp) -> Path:
    """A weights directory whose preprocessing crops 107 pixels (MLX's default init, seeded:
    the same predictions and maps in every run)."""
    mx.random.seed(0)
    config = InceptionV3Config(preprocessing=Preprocessing(resize_size=122, crop_size=107))
    model = InceptionV3(config, init_weights=False)
    model.eval()
    return save_model(model, module_tmp("small") / "weights")


@pytest.fixture(scope="module")
def photos(module_tmp) -> dict[str, Path]:
    """Real photos from scikit-image's bundled data, saved as JPEG and PNG files."""
    from skimage import data

    folder = module_tmp("photos")
    files = {}
    for name, suffix in (("chelsea", ".jpg"), ("coffee", ".jpg"), ("astronaut", ".png")):
        path = folder / f"{name}{suffix}"
        Image.fromarray(getattr(data, name)()).convert("RGB").save(path)
        files[name] = path
    return files


@pytest.fixture(scope="module")
def small_model(small_weights):
    """The small weights loaded in the test's own thread, to check the app against."""
    return mlx_inception.load(small_weights)


def open_window(qtbot, tmp_path, weights, module=None, settings_name="settings.ini"):
    settings = QSettings(str(tmp_path / settings_name), QSettings.Format.IniFormat)
    window = MainWindow(weights=str(weights) if weights else None, module=module,
                        settings=settings)
    qtbot.addWidget(window)  # closed (and its threads stopped) after the test
    window.resize(1400, 900)
    window.show()
    settle(qtbot, window)
    return window


def settle(qtbot, window) -> None:
    """Wait until every request has come back and been drawn."""
    qtbot.waitUntil(lambda: window.is_settled() and window.info is not None, timeout=WAIT_MS)


@pytest.fixture
def window(qtbot, tmp_path, small_weights):
    return open_window(qtbot, tmp_path, small_weights)


@pytest.fixture
def chelsea_window(qtbot, window, photos):
    """A window that has classified chelsea.jpg."""
    window.open_path(photos["chelsea"])
    settle(qtbot, window)
    assert window.analysis is not None and window.analysis.name == "chelsea.jpg"
    return window


def test_long_titles_never_widen_the_window(qtbot, chelsea_window):
    # A class name in the Grad-CAM title ("sulphur-crested cockatoo" from random weights)
    # once made a 1200-pixel window 1210 wide.
    window = chelsea_window
    window.resize(1200, 800)
    qtbot.wait(50)
    width = window.width()
    window.gradcam_panel.title.setText("Grad-CAM · " + "a very long class name " * 12)
    window.channel_panel.title.setText("Channel 191 of " + "branch7x7dbl_" * 20)
    qtbot.wait(50)
    assert window.width() == width and window.minimumSizeHint().width() <= 1200


def drop(window, mime: QMimeData) -> None:
    """Deliver ``mime`` exactly as a drag and drop from another application would."""
    event = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)


@pytest.fixture
def web_server(photos):
    """An HTTP server on 127.0.0.1 serving the photos' folder (a web page's images)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(photos["chelsea"].parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------------------------------- input


def test_a_dropped_photo_is_classified_as_the_predictor_classifies_it(qtbot, window, photos,
                                                                      small_model):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(photos["chelsea"]))])
    drop(window, mime)
    settle(qtbot, window)

    analysis = window.analysis
    # The app runs the plain network (it differentiates the same one for Grad-CAM).
    expected = Predictor(small_model, top_k=5, fast=False).predict(photos["chelsea"])[0]
    assert [entry.index for entry in analysis.top_k] == [e.index for e in expected.top_k]
    # Same network, same input, another thread: float32 results agree to rounding.
    np.testing.assert_allclose(analysis.probabilities, expected.probabilities, atol=1e-6)
    bars = window.predictions_panel.bars.bars()
    assert [bar.key for bar in bars] == [entry.index for entry in expected.top_k]
    assert bars[0].text == f"{100 * expected.top_k[0].probability:.1f}%"
    assert window.predictions_panel.classes.count() == 1000


def test_the_crop_shown_is_exactly_what_the_network_sees(qtbot, chelsea_window, photos,
                                                         small_model):
    image = load_image(photos["chelsea"])
    expected = np.asarray(center_crop(image, small_model.config.preprocessing))
    assert np.array_equal(chelsea_window.input_panel.crop.array, expected)
    assert expected.shape == (107, 107, 3)
    assert "451×300" in chelsea_window.input_panel.original_caption.text()


def test_the_original_is_outlined_where_the_crop_comes_from(qtbot, chelsea_window):
    # chelsea is 451x300; the small weights resize the shorter side to 122 and crop 107, so the
    # crop covers 107/122 of the height, centred: a 263.1-pixel square of the original.
    analysis = chelsea_window.analysis
    left, top, right, bottom = analysis.crop_region
    side = 300 * 107 / 122
    assert right - left == pytest.approx(side, abs=1.0)
    assert bottom - top == pytest.approx(side, abs=1e-6)
    assert (left + right) / 2 == pytest.approx(451 / 2, abs=2.0)
    assert (top + bottom) / 2 == pytest.approx(150, abs=2.0)
    marker = chelsea_window.input_panel.original.marker
    assert marker.width() == pytest.approx(right - left)  # the preview is the original's size


def test_image_data_dragged_from_a_browser_is_classified(qtbot, window, photos, small_model):
    pixels = np.asarray(load_image(photos["coffee"]))
    mime = QMimeData()
    mime.setImageData(to_qimage(pixels))
    drop(window, mime)
    settle(qtbot, window)
    assert window.analysis.name == "dropped image"
    expected = np.asarray(center_crop(Image.fromarray(pixels), small_model.config.preprocessing))
    assert np.array_equal(window.analysis.crop, expected)


def test_an_image_address_dragged_from_a_browser_is_downloaded_and_classified(
    qtbot, window, web_server
):
    mime = QMimeData()
    mime.setUrls([QUrl(f"{web_server}/coffee.jpg")])
    drop(window, mime)
    settle(qtbot, window)
    assert window.last_error is None
    assert window.analysis.name == "coffee.jpg"
    assert window.analysis.path is None  # it came as bytes, not from a file


def test_an_image_embedded_in_dragged_html_is_classified(qtbot, window, photos):
    import base64

    encoded = base64.b64encode(photos["astronaut"].read_bytes()).decode()
    mime = QMimeData()
    mime.setHtml(f'<p>an astronaut</p><img alt="x" src="data:image/png;base64,{encoded}">')
    drop(window, mime)
    settle(qtbot, window)
    assert window.last_error is None
    assert window.analysis.name == "dropped image"
    assert window.analysis.original_size == (512, 512)


def test_a_dropped_folder_opens_its_first_image(qtbot, window, photos):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(photos["chelsea"].parent))])
    drop(window, mime)
    settle(qtbot, window)
    assert window.analysis.name == "astronaut.png"  # first in name order


def test_an_image_pasted_from_the_clipboard_is_classified(qtbot, window, photos):
    QApplication.clipboard().setImage(QImage(str(photos["astronaut"])))
    window.paste()
    settle(qtbot, window)
    assert window.analysis.name == "pasted image"
    assert window.analysis.original_size == (512, 512)


def test_dropped_image_data_with_transparency_is_composited_on_white_like_a_file(
    qtbot, tmp_path, window, photos, small_model
):
    rgb = np.asarray(load_image(photos["astronaut"]))
    alpha = np.zeros(rgb.shape[:2], np.uint8)
    alpha[128:384, 128:384] = 255  # an opaque square in a transparent frame
    rgba = np.ascontiguousarray(np.dstack([rgb, alpha]))
    cut_out = tmp_path / "cut-out.png"
    Image.fromarray(rgba, "RGBA").save(cut_out)
    # Browsers hand over premultiplied ARGB: every transparent pixel is (0, 0, 0, 0).
    image = QImage(rgba.data, 512, 512, 4 * 512, QImage.Format.Format_RGBA8888).convertToFormat(
        QImage.Format.Format_ARGB32_Premultiplied)
    mime = QMimeData()
    mime.setImageData(image)
    drop(window, mime)
    settle(qtbot, window)
    expected = np.asarray(center_crop(load_image(cut_out), small_model.config.preprocessing))
    assert np.all(expected[0, 0] == 255)  # the crop reaches into the frame: white, not black
    # Alpha is 0 or 255 only, so unpremultiplying is exact: the same pixels as the file.
    assert np.array_equal(window.analysis.crop, expected)


def test_a_relative_image_address_in_dropped_html_is_resolved_against_its_page(
    qtbot, window, web_server
):
    mime = QMimeData()
    mime.setHtml(f'<base href="{web_server}/gallery/page.html"><img src="../coffee.jpg">')
    drop(window, mime)
    settle(qtbot, window)
    assert window.last_error is None
    assert window.analysis.name == "coffee.jpg"


def test_a_relative_image_address_without_its_page_is_not_fetched_and_is_named(
    qtbot, chelsea_window, monkeypatch
):
    fetched = []
    monkeypatch.setattr(window_module, "fetch_url",
                        lambda url, timeout=20.0: fetched.append(url) or b"")
    mime = QMimeData()
    mime.setHtml('<p><img src="/static/cat.jpg" alt="cat"></p>')
    drop(chelsea_window, mime)
    settle(qtbot, chelsea_window)
    assert fetched == []
    message = chelsea_window.error_label.text()
    assert "/static/cat.jpg" in message and "chelsea" not in message
    assert chelsea_window.analysis.name == "chelsea.jpg"


def test_a_web_image_that_cannot_be_downloaded_is_named_by_its_address(qtbot, chelsea_window,
                                                                       web_server):
    url = f"{web_server}/missing.jpg"
    chelsea_window.open_url(url)
    settle(qtbot, chelsea_window)
    message = chelsea_window.error_label.text()
    assert url in message and "chelsea" not in message  # not the image shown before
    assert chelsea_window.analysis.name == "chelsea.jpg"


def test_a_web_image_that_arrives_after_a_file_was_opened_is_not_shown(qtbot, window, photos,
                                                                       monkeypatch):
    release = threading.Event()
    coffee = photos["coffee"].read_bytes()

    def slow_fetch(url, timeout=20.0):
        release.wait(30)
        return coffee

    monkeypatch.setattr(window_module, "fetch_url", slow_fetch)
    window.open_url("https://example.com/coffee.jpg")
    window.open_path(photos["chelsea"])  # asked for after the web image
    qtbot.waitUntil(lambda: window.analysis is not None
                    and window.analysis.name == "chelsea.jpg", timeout=WAIT_MS)
    release.set()
    settle(qtbot, window)
    assert window.analysis.name == "chelsea.jpg"


def test_dropping_something_that_is_no_image_says_so(qtbot, window):
    mime = QMimeData()
    mime.setText("just some words")
    drop(window, mime)
    assert "Nothing to open" in window.error_label.text()
    assert window.error_label.isVisibleTo(window)


def test_page_down_and_page_up_move_through_the_folder_in_natural_order(qtbot, tmp_path, window,
                                                                        photos):
    folder = tmp_path / "album"
    folder.mkdir()
    for name, source in (("img1.jpg", "chelsea"), ("img2.png", "coffee"),
                         ("img10.jpg", "astronaut")):
        Image.open(photos[source]).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    window.open_path(folder / "img1.jpg")
    settle(qtbot, window)
    for key, expected in ((Qt.Key.Key_PageDown, "img2.png"), (Qt.Key.Key_PageDown, "img10.jpg"),
                          (Qt.Key.Key_PageDown, "img10.jpg"), (Qt.Key.Key_PageUp, "img2.png")):
        qtbot.keyClick(window, key)
        settle(qtbot, window)
        assert window.analysis.name == expected


def test_page_down_steps_over_an_unreadable_image(qtbot, tmp_path, window, photos):
    folder = tmp_path / "album"
    folder.mkdir()
    Image.open(photos["chelsea"]).save(folder / "img1.jpg")
    (folder / "img2.jpg").write_bytes(b"not a JPEG")
    Image.open(photos["coffee"]).save(folder / "img3.jpg")
    window.open_path(folder / "img1.jpg")
    settle(qtbot, window)
    qtbot.keyClick(window, Qt.Key.Key_PageDown)
    settle(qtbot, window)
    assert "img2.jpg" in window.error_label.text()
    assert window.analysis.name == "img1.jpg"  # the last good image stays
    qtbot.keyClick(window, Qt.Key.Key_PageDown)  # from img2, the one asked for last
    settle(qtbot, window)
    assert window.analysis.name == "img3.jpg"


def test_relative_paths_are_remembered_as_absolute(qtbot, window, photos, small_weights,
                                                   monkeypatch):
    monkeypatch.chdir(photos["chelsea"].parent)
    window.open_path("chelsea.jpg")
    settle(qtbot, window)
    monkeypatch.chdir(small_weights.parent)
    window.load_weights(small_weights.name)
    settle(qtbot, window)
    monkeypatch.chdir("/")  # where the next start may run from
    recent = window.recent_files()[0]
    assert os.path.isabs(recent) and Path(recent).samefile(photos["chelsea"])
    last = window.settings.value("weights/last")
    assert os.path.isabs(last) and Path(last).samefile(small_weights)


def test_a_recent_file_that_has_gone_is_dropped_from_the_menu(qtbot, tmp_path, window, photos):
    gone = tmp_path / "gone.jpg"
    shutil.copy(photos["chelsea"], gone)
    for path in (gone, photos["coffee"]):
        window.open_path(path)
        settle(qtbot, window)
    gone.unlink()
    next(a for a in window.recent_menu.actions() if a.text() == str(gone)).trigger()
    settle(qtbot, window)
    assert "gone.jpg" in window.error_label.text()
    assert window.recent_files() == [str(photos["coffee"])]
    assert [a.text() for a in window.recent_menu.actions()] == [str(photos["coffee"])]


def test_opened_files_are_remembered_newest_first_across_windows(qtbot, tmp_path, window, photos,
                                                                 small_weights):
    for name in ("chelsea", "coffee", "chelsea"):
        window.open_path(photos[name])
        settle(qtbot, window)
    expected = [str(photos["chelsea"]), str(photos["coffee"])]
    assert window.recent_files() == expected
    assert [a.text() for a in window.recent_menu.actions()] == expected

    second = open_window(qtbot, tmp_path, small_weights)  # the same settings file
    assert second.recent_files() == expected
    second.recent_menu.actions()[1].trigger()
    settle(qtbot, second)
    assert second.analysis.name == "coffee.jpg"


def test_the_newest_image_wins_when_several_are_opened_at_once(qtbot, window, photos):
    for name in ("chelsea", "coffee", "astronaut"):
        window.open_path(photos[name])
    settle(qtbot, window)
    assert window.analysis.name == "astronaut.png"
    assert window.grad_cam_result.request == window.analysis.request


# ----------------------------------------------------------------------------- network views


def test_switching_module_and_branch_updates_the_grids(qtbot, chelsea_window):
    panel = chelsea_window.network_panel
    taps = chelsea_window.analysis.taps
    panel.select("Mixed_6b")
    branches = ["Mixed_6b.branch1x1", "Mixed_6b.branch7x7", "Mixed_6b.branch7x7dbl",
                "Mixed_6b.branch_pool"]
    assert list(panel.views) == branches
    for key in branches:
        grid = panel.views[key].grid
        assert (grid.tile_height, grid.tile_width) == taps[key].shape[:2] == (5, 5)
        assert len(grid.order) == taps[key].shape[2]
    assert [bar.key for bar in panel.shares.bars()] == branches

    panel.select("Mixed_6b", "Mixed_6b.branch7x7dbl")
    assert list(panel.views) == ["Mixed_6b.branch7x7dbl"]

    [stem_item] = panel.navigator.findItems(
        "Conv2d_2a_3x3", Qt.MatchFlag.MatchExactly | Qt.MatchFlag.MatchRecursive)
    panel.navigator.setCurrentItem(stem_item)  # what a click in the navigator does
    assert list(panel.views) == ["Conv2d_2a_3x3"]
    assert panel.views["Conv2d_2a_3x3"].grid.tile_height == 51


def test_clicking_a_branch_share_bar_shows_that_branch(qtbot, chelsea_window):
    panel = chelsea_window.network_panel
    panel.select("Mixed_7b")
    bars = panel.shares
    row = [bar.key for bar in bars.bars()].index("Mixed_7b.branch3x3")
    qtbot.mouseClick(bars, Qt.MouseButton.LeftButton,
                     pos=QPointF(bars.width() / 2, row * 30 + 15).toPoint())
    assert (panel.module, panel.branch) == ("Mixed_7b", "Mixed_7b.branch3x3")
    assert list(panel.views) == ["Mixed_7b.branch3x3"]


def test_sorting_and_normalising_change_the_grid_as_the_package_computes(qtbot, chelsea_window):
    panel = chelsea_window.network_panel
    panel.select("Mixed_5c")
    maps = panel.shown_maps()
    key = "Mixed_5c.branch3x3dbl"

    panel.sort.setCurrentIndex(2)  # max
    view = panel.views[key]
    assert view.grid.order.tolist() == channel_order(maps[key], "max").tolist()

    panel.scale.setCurrentIndex(2)  # per module
    scaled = normalise(maps, "module")[key]
    grid = panel.views[key].grid
    first = int(grid.order[0])
    np.testing.assert_array_equal(grid.values[: grid.tile_height, : grid.tile_width],
                                  scaled[:, :, first])

    before = panel.views[key].view.array.copy()
    panel.colormap.setCurrentText("gray")
    after = panel.views[key].view.array
    assert not np.array_equal(before, after)
    tiles = after[~np.isnan(panel.views[key].grid.values)]  # not the gaps between tiles
    assert np.all(tiles[:, 0] == tiles[:, 1])  # gray: equal channels


def tile_centre(branch_view, channel: int) -> QPointF:
    grid = branch_view.grid
    x, y = grid.tile_origin(channel)
    return branch_view.view.to_widget(x + grid.tile_width / 2 + 0.2,
                                      y + grid.tile_height / 2 + 0.2)


def test_the_value_under_the_mouse_is_shown(qtbot, chelsea_window):
    panel = chelsea_window.network_panel
    panel.select("Mixed_5b")
    view = panel.views["Mixed_5b.branch5x5"]
    channel = int(view.grid.order[3])
    position = tile_centre(view, channel)
    # What a mouse move over the widget delivers (QTest's mouseMove sends no event offscreen).
    move = QMouseEvent(QEvent.Type.MouseMove, position, view.view.mapToGlobal(position),
                       Qt.MouseButton.NoButton, Qt.MouseButton.NoButton,
                       Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(view.view, move)
    text = panel.hover.text()
    assert f"channel {channel}" in text
    row, column = (int(part.split()[-1]) for part in text.split("·")[2].split(","))
    value = chelsea_window.analysis.taps["Mixed_5b.branch5x5"][row, column, channel]
    assert f"value {value:.4g}" in text


def test_clicking_a_channel_enlarges_it_and_overlays_it_with_adjustable_opacity(
    qtbot, chelsea_window
):
    panel = chelsea_window.network_panel
    panel.select("Mixed_5d")
    view = panel.views["Mixed_5d.branch_pool"]
    channel = int(view.grid.order[5])
    qtbot.mouseClick(view.view, Qt.MouseButton.LeftButton,
                     pos=tile_centre(view, channel).toPoint())
    channel_panel = chelsea_window.channel_panel
    assert (channel_panel.key, channel_panel.channel) == ("Mixed_5d.branch_pool", channel)
    values = chelsea_window.analysis.taps["Mixed_5d.branch_pool"][:, :, channel]
    scaled = normalise({"c": values[:, :, None]}, "channel")["c"][:, :, 0]
    assert np.array_equal(channel_panel.map_view.array, apply_colormap(scaled, "viridis"))

    crop = chelsea_window.analysis.crop
    channel_panel.opacity.setValue(0)
    assert np.array_equal(channel_panel.overlay_view.array, crop)
    channel_panel.opacity.setValue(80)
    assert np.array_equal(channel_panel.overlay_view.array, overlay(crop, scaled, "viridis", 0.8))


def test_without_a_click_the_strongest_channel_of_the_busiest_branch_is_shown(qtbot,
                                                                             chelsea_window):
    panel = chelsea_window.network_panel
    panel.select("Mixed_6e")
    shares = {bar.key: bar.value for bar in panel.shares.bars()}
    busiest = max(shares, key=shares.get)
    maps = panel.shown_maps()[busiest]
    assert chelsea_window.channel_panel.key == busiest
    assert chelsea_window.channel_panel.channel == int(channel_order(maps, "mean")[0])


def test_the_module_option_chooses_the_first_module_shown(qtbot, tmp_path, small_weights):
    window = open_window(qtbot, tmp_path, small_weights, module="Mixed_6a")
    assert window.network_panel.module == "Mixed_6a"
    unknown = open_window(qtbot, tmp_path, small_weights, module="Mixed_9z",
                          settings_name="other.ini")
    assert "unknown module 'Mixed_9z'" in unknown.error_label.text()


# ----------------------------------------------------------------------------------- Grad-CAM


def test_grad_cam_at_mixed_7c_is_computed_for_the_top_class(qtbot, chelsea_window, small_model,
                                                            photos):
    result = chelsea_window.grad_cam_result
    top = chelsea_window.analysis.top_k[0].index
    assert (result.layer, result.class_index) == ("Mixed_7c", top)
    image = preprocess(load_image(photos["chelsea"]), small_model.config.preprocessing)
    expected = grad_cam(small_model, image, top, "Mixed_7c")
    np.testing.assert_allclose(result.heatmap, expected.heatmap, atol=1e-5)
    assert chelsea_window.gradcam_panel.view.array.shape == (107, 107, 3)


def test_choosing_a_class_in_the_list_makes_it_the_grad_cam_target(qtbot, chelsea_window,
                                                                   small_model, photos):
    panel = chelsea_window.predictions_panel
    panel.search.setText("tabby")
    visible = [panel.classes.item(i) for i in range(panel.classes.count())
               if not panel.classes.item(i).isHidden()]
    assert [item.text().split("   ")[1] for item in visible] == ["tabby  (#281)"]
    rect = panel.classes.visualItemRect(visible[0])
    qtbot.mouseClick(panel.classes.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    settle(qtbot, chelsea_window)
    result = chelsea_window.grad_cam_result
    assert result.class_index == 281 and result.label == "tabby"
    image = preprocess(load_image(photos["chelsea"]), small_model.config.preprocessing)
    expected = grad_cam(small_model, image, 281, "Mixed_7c")
    np.testing.assert_allclose(result.heatmap, expected.heatmap, atol=1e-5)


def test_grad_cam_of_a_single_branch(qtbot, chelsea_window):
    panel = chelsea_window.gradcam_panel
    panel.module.setCurrentText("Mixed_6b")
    settle(qtbot, chelsea_window)
    assert chelsea_window.grad_cam_result.layer == "Mixed_6b"
    panel.branch.setCurrentIndex(panel.branch.findText("branch7x7dbl"))
    settle(qtbot, chelsea_window)
    result = chelsea_window.grad_cam_result
    assert result.layer == "Mixed_6b.branch7x7dbl"
    assert result.heatmap.shape == (5, 5)


def test_grad_cam_here_uses_the_branch_shown_in_the_network_panel(qtbot, chelsea_window):
    network = chelsea_window.network_panel
    network.select("Mixed_5c", "Mixed_5c.branch_pool")
    network.gradcam_here.click()
    settle(qtbot, chelsea_window)
    assert chelsea_window.grad_cam_result.layer == "Mixed_5c.branch_pool"
    assert chelsea_window.gradcam_panel.layer() == "Mixed_5c.branch_pool"


# ------------------------------------------------------------------------------------- export


@pytest.mark.parametrize("panel", ["window", "input", "predictions", "network", "channel",
                                   "gradcam"])
def test_any_panel_is_saved_as_png(qtbot, tmp_path, chelsea_window, panel):
    path = chelsea_window.export_png(tmp_path / f"{panel}.png", panel)
    widget = chelsea_window if panel == "window" else chelsea_window.panels[panel]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only mode
    with Image.open(path) as image:
        assert image.format == "PNG"
        ratio = image.width / widget.width()  # 1 or the screen's device pixel ratio
        assert image.size == (round(widget.width() * ratio), round(widget.height() * ratio))


def test_predictions_are_saved_as_csv_and_json(qtbot, tmp_path, chelsea_window):
    analysis = chelsea_window.analysis
    with open(chelsea_window.export_predictions_csv(tmp_path / "p.csv"), newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 1000
    assert [int(r["index"]) for r in rows[:5]] == [e.index for e in analysis.top_k]
    probabilities = [float(r["probability"]) for r in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert rows[0]["label"] == analysis.top_k[0].label

    document = json.loads(chelsea_window.export_predictions_json(tmp_path / "p.json").read_text())
    assert document["image"] == "chelsea.jpg"
    assert [e["index"] for e in document["top_k"]] == [e.index for e in analysis.top_k]
    assert len(document["probabilities"]) == 1000
    assert document["weights"]["pretrained"] is True
    assert document["grad_cam"]["layer"] == "Mixed_7c"


def test_activations_are_saved_as_npz_all_or_the_shown_module(qtbot, tmp_path, chelsea_window):
    analysis = chelsea_window.analysis
    chelsea_window.export_activations(tmp_path / "all.npz")
    chelsea_window.network_panel.select("Mixed_6a")
    chelsea_window.export_activations(tmp_path / "module.npz", module_only=True)
    settle(qtbot, chelsea_window)
    with np.load(tmp_path / "all.npz") as archive:
        assert set(analysis.taps) <= set(archive.files)
        for key in ("Conv2d_1a_3x3", "Mixed_6b.branch7x7", "fc"):
            np.testing.assert_array_equal(archive[key], analysis.taps[key])
        np.testing.assert_array_equal(archive["input_crop"], analysis.crop)
        assert str(archive["grad_cam_layer"]) == "Mixed_7c"
    with np.load(tmp_path / "module.npz") as archive:
        taps = {f for f in archive.files if f.startswith(("Mixed", "Conv", "maxpool", "fc"))}
        assert taps == {"Mixed_6a.branch3x3", "Mixed_6a.branch3x3dbl", "Mixed_6a.branch_pool"}


# ------------------------------------------------------------------------------------- errors


def test_a_bad_file_shows_an_error_and_the_app_stays_usable(qtbot, tmp_path, chelsea_window,
                                                            photos):
    not_an_image = tmp_path / "broken.jpg"
    not_an_image.write_text("this is text, not a JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photos["chelsea"].read_bytes()[:2000])
    for bad in (not_an_image, truncated, tmp_path / "missing.png"):
        chelsea_window.open_path(bad)
        settle(qtbot, chelsea_window)
        assert bad.name in chelsea_window.error_label.text()
        assert chelsea_window.error_label.isVisibleTo(chelsea_window)
        assert chelsea_window.analysis.name == "chelsea.jpg"  # the last good image stays

    chelsea_window.open_path(photos["coffee"])
    settle(qtbot, chelsea_window)
    assert chelsea_window.analysis.name == "coffee.jpg"
    assert not chelsea_window.error_label.isVisibleTo(chelsea_window)


def test_a_broken_weights_file_is_reported_and_the_loaded_network_kept(qtbot, tmp_path,
                                                                       chelsea_window):
    loaded = chelsea_window.info
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    chelsea_window.load_weights(str(broken))
    settle(qtbot, chelsea_window)
    assert "Could not load weights" in chelsea_window.error_label.text()
    assert "broken.safetensors" in chelsea_window.error_label.text()
    assert chelsea_window.info is loaded
    assert chelsea_window.analysis.name == "chelsea.jpg"


# ----------------------------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def random_window(qapp, module_tmp, photos):
    """The app started without weights (the randomly initialised 299-pixel network)."""
    folder = module_tmp("random")
    window = MainWindow(weights="random",
                        settings=QSettings(str(folder / "s.ini"), QSettings.Format.IniFormat))
    window.show()
    window.open_path(photos["chelsea"])
    deadline = time.monotonic() + WAIT_MS / 1000
    while not (window.is_settled() and window.analysis is not None):
        qapp.processEvents()
        time.sleep(0.01)
        assert time.monotonic() < deadline, "the random network never finished"
    yield window
    window.close()


def test_without_weights_the_window_says_so_and_shows_a_random_network(random_window):
    banner = random_window.banner
    assert "randomly initialised" in banner.text()
    assert banner.property("warning") is True
    assert random_window.info.pretrained is False
    assert random_window.analysis.crop.shape == (299, 299, 3)
    assert "Mixed_7c.branch3x3dbl" in random_window.analysis.taps


def test_the_random_network_spreads_its_predictions_over_the_classes(random_window):
    # Its BatchNorm statistics come from the photo shown: no class takes it all (measured 7.1%
    # for the top one) and every module's activations stay at a trained network's scale.
    analysis = random_window.analysis
    assert analysis.top_k[0].probability < 0.3
    assert "BatchNorm statistics" in random_window.banner.text()
    for name in ("Mixed_5b", "Mixed_7c"):
        assert 0.05 < float(analysis.taps[name].mean()) < 5


def test_the_aux_head_shows_its_maps_and_its_own_top_5(random_window):
    panel = random_window.network_panel
    panel.select("AuxLogits")
    assert list(panel.views) == ["AuxLogits.conv0", "AuxLogits.conv1"]
    assert panel.views["AuxLogits.conv0"].maps.shape == (5, 5, 128)
    assert panel.views["AuxLogits.conv1"].maps.shape == (1, 1, 768)
    assert not panel.gradcam_here.isEnabled()
    assert random_window.predictions_panel.aux.text().startswith("Aux head (Mixed_6e):")


def timm_style_checkpoint(model: InceptionV3, path: Path) -> bytes:
    """The model's weights as timm publishes them: PyTorch layout, no aux head, safetensors."""
    import mlx.core as mx

    from mlx_inception.checkpoints.store import model_weights

    state = {}
    for key, value in model_weights(model).items():
        if key.startswith("AuxLogits."):
            continue
        if key.endswith("conv.weight"):
            value = value.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        state[key] = value
    mx.save_safetensors(str(path), state)
    return path.read_bytes()


@pytest.mark.slow
def test_a_registry_name_is_downloaded_with_progress_and_loaded(qtbot, tmp_path, monkeypatch,
                                                                small_weights, small_model,
                                                                photos):
    from hub_server import HubServer
    from huggingface_hub import constants

    from mlx_inception.checkpoints import registry

    name = registry.default_name()
    server = HubServer().start()
    try:
        server.add_repo(registry.find(name).repo_id,
                        {"model.safetensors": timm_style_checkpoint(
                            small_model, tmp_path / "upstream.safetensors")})
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "HF_TOKEN"):
            monkeypatch.delenv(variable, raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))

        window = open_window(qtbot, tmp_path, small_weights)
        progress = []
        window.worker.progress.connect(lambda kind, gen, fraction, text:
                                       progress.append((fraction, text)))
        window.load_weights(name)
        settle(qtbot, window)
    finally:
        server.stop()
    assert window.info.pretrained and name in window.banner.text()
    fractions = [f for f, _ in progress if f >= 0]
    assert fractions and 0 < max(fractions) <= 1.0
    assert any("MB" in text for _, text in progress)
    window.open_path(photos["coffee"])
    settle(qtbot, window)
    assert window.analysis.crop.shape == (299, 299, 3)  # the registry's preprocessing


def test_the_weights_dialog_returns_the_chosen_source(qtbot):
    from mlx_inception_app.dialogs import WeightsDialog

    from mlx_inception.checkpoints import registry

    dialog = WeightsDialog()
    qtbot.addWidget(dialog)
    names = [dialog.name.itemText(i) for i in range(dialog.name.count())]
    assert names == registry.names()
    dialog.name.setCurrentText("timm/inception_v3.gluon_in1k")
    use = next(b for b in dialog.findChildren(QPushButton) if b.text() == "Use")
    use.click()
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialog.source() == "timm/inception_v3.gluon_in1k"


@pytest.fixture
def downloaded(tmp_path, small_weights) -> Path:
    """Another name for the small weights: what a faked download hands back."""
    link = tmp_path / "downloaded"
    link.symlink_to(small_weights, target_is_directory=True)
    return link


def test_weights_chosen_during_a_download_stay_when_it_finishes(qtbot, tmp_path, window,
                                                                small_weights, downloaded,
                                                                monkeypatch):
    release = threading.Event()

    def slow_download(source):  # no progress callback: it cannot be stopped, only ignored
        release.wait(30)
        return str(downloaded)

    monkeypatch.setattr(window_module, "download_weights", slow_download)
    chosen = tmp_path / "chosen"
    chosen.symlink_to(small_weights, target_is_directory=True)
    window.load_weights("inception_v3.tv_in1k")
    window.load_weights(str(chosen))  # chosen after the download began
    qtbot.waitUntil(lambda: window.info.source == str(chosen), timeout=WAIT_MS)
    release.set()
    settle(qtbot, window)
    assert window.info.source == str(chosen)
    assert window.settings.value("weights/last") == str(chosen)


def test_choosing_local_weights_stops_a_download_in_progress(qtbot, window, small_weights,
                                                             downloaded, monkeypatch):
    stopped = threading.Event()

    def endless_download(source, progress):
        try:
            for _ in range(3000):  # 30 s of chunks unless stopped
                progress(-1.0, "downloading")
                time.sleep(0.01)
        except Exception:
            stopped.set()
            raise
        return str(downloaded)

    monkeypatch.setattr(window_module, "download_weights", endless_download)
    reports = []
    window.worker.progress.connect(lambda *report: reports.append(report))
    window.load_weights("inception_v3.tv_in1k")
    qtbot.waitUntil(lambda: bool(reports), timeout=WAIT_MS)  # it runs
    window.load_weights(str(small_weights))
    assert stopped.wait(10)
    settle(qtbot, window)
    assert window.info.source == str(small_weights)
    assert window.settings.value("weights/last") == str(small_weights)


def test_starting_a_download_skips_weights_loads_not_yet_started(qtbot, tmp_path, window,
                                                                 small_weights, downloaded,
                                                                 monkeypatch):
    busy, release = threading.Event(), threading.Event()
    monkeypatch.setattr(window_module, "download_weights",
                        lambda source: (release.wait(30), str(downloaded))[1])
    loads = []
    load = window.session.load_weights
    monkeypatch.setattr(window.session, "load_weights",
                        lambda source: (loads.append(str(source)), load(source))[1])
    window.worker.submit("slow", busy.wait, 30)  # the compute thread is busy
    window.load_weights(str(small_weights))  # waits behind it
    window.load_weights("inception_v3.tv_in1k")  # asked for after it
    behind = threading.Event()
    window.worker.submit("behind", behind.set)  # runs once the load before it ran or was skipped
    busy.set()
    assert behind.wait(WAIT_MS / 1000)
    assert loads == []  # skipped: the download was asked for after it
    release.set()
    settle(qtbot, window)
    assert loads == [str(downloaded)]
    assert window.info.source == str(downloaded)


def test_a_download_holds_up_neither_web_images_nor_exports(qtbot, tmp_path, chelsea_window,
                                                            photos, small_weights, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(window_module, "download_weights",
                        lambda source: (release.wait(30), str(small_weights))[1])
    coffee = photos["coffee"].read_bytes()
    monkeypatch.setattr(window_module, "fetch_url", lambda url, timeout=20.0: coffee)
    try:
        chelsea_window.load_weights("inception_v3.tv_in1k")
        chelsea_window.export_activations(tmp_path / "all.npz")
        chelsea_window.open_url("https://example.com/coffee.jpg")
        # Seconds of work; the download waits 30 s.
        qtbot.waitUntil(lambda: chelsea_window.analysis.name == "coffee.jpg"
                        and (tmp_path / "all.npz").exists(), timeout=20_000)
    finally:
        release.set()
    settle(qtbot, chelsea_window)


# ------------------------------------------------------------------------------------- worker


def test_only_the_newest_queued_request_of_a_kind_runs(qtbot):
    worker = Worker()
    try:
        started, release = threading.Event(), threading.Event()
        ran = []

        def job(name):
            if name == "first":
                started.set()
                release.wait(10)
            ran.append(name)
            return name

        delivered = []
        worker.finished.connect(lambda kind, generation, result: delivered.append(
            (result, worker.is_current(kind, generation))))
        worker.submit("analyse", job, "first")
        assert started.wait(5)  # taken off the queue: the next two wait behind it
        worker.submit("analyse", job, "second")
        worker.submit("analyse", job, "third")
        release.set()
        qtbot.waitUntil(worker.idle, timeout=5000)
        qtbot.waitUntil(lambda: len(delivered) == 2, timeout=5000)
    finally:
        worker.shutdown()
    assert ran == ["first", "third"]  # "second" was stale before it started
    assert delivered == [("first", False), ("third", True)]


def test_the_gui_thread_keeps_running_while_a_job_works(qtbot):
    worker = Worker()
    ticks = []
    try:
        from PySide6.QtCore import QTimer

        timer = QTimer()
        timer.timeout.connect(lambda: ticks.append(time.monotonic()))
        timer.start(10)
        worker.submit("slow", time.sleep, 0.5)
        qtbot.waitUntil(worker.idle, timeout=5000)
        timer.stop()
    finally:
        worker.shutdown()
    # A blocked GUI thread would tick once or twice; a free one about 50 times.
    assert len(ticks) >= 15


def test_the_window_shows_a_busy_indicator_while_work_runs(qtbot, window):
    release = threading.Event()
    window.worker.submit("slow", release.wait, 10, description="thinking hard")
    qtbot.waitUntil(lambda: window.busy.bar.isVisibleTo(window), timeout=5000)
    assert window.busy.text.text() == "thinking hard…"
    release.set()
    qtbot.waitUntil(lambda: not window.busy.bar.isVisibleTo(window), timeout=5000)
    assert window.busy.text.text() == ""


def test_a_failing_job_is_reported_not_raised(qtbot):
    worker = Worker()
    failures = []
    worker.failed.connect(lambda kind, generation, message: failures.append(message))

    def broken():
        raise ValueError("no such layer")

    try:
        worker.submit("gradcam", broken)
        qtbot.waitUntil(lambda: bool(failures), timeout=5000)
    finally:
        worker.shutdown()
    assert failures == ["ValueError: no such layer"]


def test_qt_calls_never_use_up_the_references_of_none_and_true(qtbot):
    from mlx_inception_app import qt_compat
    from PySide6.QtWidgets import QLabel

    label = QLabel()
    qtbot.addWidget(label)
    before = sys.getrefcount(None), sys.getrefcount(True)
    for _ in range(20_000):
        label.setText("x")  # returns None
        label.objectNameChanged.emit("y")  # returns True
    if qt_compat.PROTECTED or sys.version_info >= (3, 12):
        # Immortal (3.12+) or given spare references: far more than any session can take.
        assert min(sys.getrefcount(None), sys.getrefcount(True)) > 1 << 30
    else:  # a PySide6 without the leak
        assert before[0] - sys.getrefcount(None) < 100
        assert before[1] - sys.getrefcount(True) < 100


def test_closing_the_window_while_the_network_works_returns_at_once(qtbot, tmp_path, window,
                                                                    small_weights):
    import mlx.core as mx

    started, release = threading.Event(), threading.Event()
    results, reported = [], []

    def network_work():
        started.set()
        release.wait(30)
        value = mx.sum(mx.ones((64, 64)) @ mx.ones((64, 64))).item()
        results.append(value)
        return value

    window.worker.finished.connect(lambda *result: reported.append(result))
    window.worker.submit("analyse", network_work, description="working")
    assert started.wait(10)
    start = time.monotonic()
    window.close()
    assert time.monotonic() - start < 1.0  # not waiting for the job
    assert not window.isVisible()
    saved = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    assert Path(saved.value("weights/last")).samefile(small_weights)
    release.set()
    assert window.worker.wait(10)  # the job finished, then its thread ended
    assert results == [64.0 ** 3]
    assert reported == []  # nothing is reported to a closed window


EXIT_SCRIPT = """
import sys, time
from pathlib import Path
import mlx_inception
import mlx.core as mx
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
from mlx_inception_app.window import MainWindow

weights, folder = sys.argv[1], Path(sys.argv[2])
app = QApplication([])

def network_work(name, seconds):
    a, end = mx.random.normal((256, 256)), time.monotonic() + seconds
    while time.monotonic() < end:
        a = mx.tanh(a @ a)
        mx.eval(a)
    (folder / name).write_text("finished")

def window(name):
    settings = QSettings(str(folder / (name + ".ini")), QSettings.Format.IniFormat)
    w = MainWindow(weights=weights, settings=settings)
    w.show()
    while not (w.is_settled() and w.info is not None):
        app.processEvents()
        time.sleep(0.01)
    return w

closed, left_open = window("closed"), window("open")
closed.worker.submit("analyse", network_work, "closed.done", 1.5)
time.sleep(0.3)
start = time.monotonic()
closed.close()
print(f"close took {time.monotonic() - start:.3f} s")
left_open.worker.submit("analyse", network_work, "open.done", 1.5)
time.sleep(0.3)
print("the script ends while MLX works", flush=True)
"""


@pytest.mark.slow
def test_the_process_exits_cleanly_when_it_ends_while_the_network_works(tmp_path,
                                                                        small_weights):
    # One window closed while MLX works, one left open with MLX working as the script ends:
    # both jobs finish, and only then the process exits, with 0 (never "terminate called").
    script = tmp_path / "exit.py"
    script.write_text(EXIT_SCRIPT)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, str(script), str(small_weights), str(tmp_path)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr
    assert "terminate" not in done.stderr
    seconds = float(done.stdout.split("close took ")[1].split()[0])
    assert seconds < 0.5  # the job had 1.2 s to go
    assert (tmp_path / "closed.done").read_text() == "finished"
    assert (tmp_path / "open.done").read_text() == "finished"


STUCK_SCRIPT = """
import sys, threading
import mlx_inception
import mlx_inception_app.main as app_main
from mlx_inception_app.window import MainWindow

app_main.EXIT_GRACE_S = 0.5
opened = MainWindow.__init__

def with_a_stuck_job(self, *args, **kwargs):
    opened(self, *args, **kwargs)
    # Like a read from a dead connection: it never returns, and nothing waits for it to draw.
    self.worker.submit("stuck", threading.Event().wait, lane="io")

MainWindow.__init__ = with_a_stuck_job
sys.exit(app_main.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_job_that_never_ends_does_not_keep_the_closed_app_running(tmp_path, small_weights,
                                                                    photos):
    script = tmp_path / "stuck.py"
    script.write_text(STUCK_SCRIPT)
    out = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    done = subprocess.run([sys.executable, str(script), str(photos["chelsea"]), "--weights",
                           str(small_weights), "--screenshot", str(out)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr
    assert "work still running 0.5 s after the window closed" in done.stderr
    assert out.stat().st_size > 0 and f"saved {out}" in done.stdout


# -------------------------------------------------------------------------------- command line


def run_app(*arguments: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "-m", "mlx_inception_app.main", *arguments],
                          capture_output=True, text=True, timeout=240, env=env)


@pytest.mark.slow
def test_screenshot_renders_the_whole_window_and_exits_0(tmp_path, small_weights, photos):
    out = tmp_path / "shot.png"
    done = run_app(str(photos["chelsea"]), "--weights", str(small_weights), "--module",
                   "Mixed_6b", "--size", "1200x800", "--screenshot", str(out))
    assert done.returncode == 0, done.stderr
    with Image.open(out) as image:
        assert image.size == (1200, 800)
        colours = len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0))
    assert colours > 1000  # photos, grids and heatmaps, not an empty window


@pytest.mark.slow
def test_screenshot_of_a_file_that_is_no_image_exits_1_with_the_reason(tmp_path, small_weights):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    done = run_app(str(bad), "--weights", str(small_weights), "--screenshot",
                   str(tmp_path / "shot.png"))
    assert done.returncode == 1
    assert "notes.png" in done.stderr and "error:" in done.stderr
