"""The desktop app on a real screen: it starts or says in one line why not, it fits the screen
it opens on, and its layout under X (Xvfb) is the one offscreen rendering gives.

The tests that need a window start their own Xvfb (Debian's ``xvfb``); without it they are
skipped, except in CI (``CI=true``), where a missing Xvfb fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlx_inception_app import geometry, qt_platform
from mlx_inception_app.main import main
from PIL import Image
from PySide6.QtCore import QMargins, QRect, QSettings, QSize
from PySide6.QtWidgets import QWidget

import mlx_inception

APP_TIMEOUT_S = 300
XVFB_DEADLINE_S = 15
# Xvfb's screens in these tests: a 13-inch laptop's (the smallest the app is made for) and
# the default scaled resolution of a 13-inch MacBook Air.
SCREENS = [(1280, 800), (1440, 900)]


@pytest.fixture(scope="module")
def chelsea(tmp_path_factory) -> Path:
    """scikit-image's chelsea photo as a PNG file."""
    from skimage import data

    path = tmp_path_factory.mktemp("photos") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


def app_env(**changes: str | None) -> dict[str, str]:
    """The environment for the app in a subprocess: this one with ``changes`` (None: unset)."""
    env = dict(os.environ)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_app(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlx_inception_app.main", *arguments],
                          capture_output=True, text=True, timeout=APP_TIMEOUT_S,
                          env=env or app_env())


def error_lines(stderr: str) -> list[str]:
    """Return the lines of ``stderr`` that the app wrote (Qt's own chatter left out)."""
    return [line for line in stderr.splitlines()
            if line and "propagateSizeHints" not in line and "Warning" not in line]


# ------------------------------------------------------------------- before Qt starts


def test_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"mlx-inception-app {mlx_inception.__version__}"


def loads_all_but(*missing: str):
    return lambda library: library not in missing


def reachable(display: str) -> None:
    return None


def no_plugin(name: str) -> None:
    return None


def problem(environ: dict[str, str], load=None, system: str = "linux") -> str | None:
    return qt_platform.platform_problem(environ, load=load or loads_all_but(), reach=reachable,
                                        plugin=no_plugin, system=system)


def test_without_a_display_the_check_says_how_to_run_without_a_window():
    message = problem({})
    assert "DISPLAY is not set" in message
    assert "QT_QPA_PLATFORM=offscreen" in message and "--screenshot" in message
    assert "\n" not in message


def test_missing_xcb_libraries_are_named_with_their_debian_packages():
    message = problem({"DISPLAY": ":0"},
                      load=loads_all_but("libxcb-icccm.so.4", "libxcb-keysyms.so.1"))
    assert "libxcb-icccm.so.4, libxcb-keysyms.so.1" in message
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1" in message
    assert "\n" not in message


def test_offscreen_needs_no_display_but_the_libraries_qt_gui_links():
    assert problem({"QT_QPA_PLATFORM": "offscreen"}) is None
    assert problem({"QT_QPA_PLATFORM": "offscreen"},
                   load=loads_all_but("libxcb-cursor.so.0")) is None
    assert "libegl1" in problem({"QT_QPA_PLATFORM": "offscreen"},
                                load=loads_all_but("libEGL.so.1"))


def test_a_display_with_the_libraries_passes_and_other_systems_are_not_checked():
    assert problem({"DISPLAY": ":0"}) is None
    assert problem({}, system="darwin") is None
    assert problem({"QT_QPA_PLATFORM": "eglfs"}) is None  # Qt's to judge


def test_a_platform_list_passes_when_any_of_its_platforms_can_start():
    assert problem({"QT_QPA_PLATFORM": "wayland;xcb", "DISPLAY": ":0"}) is None
    message = problem({"QT_QPA_PLATFORM": "wayland"})
    assert "WAYLAND_DISPLAY is not set" in message


def test_an_x_display_that_does_not_exist_is_reported():
    assert qt_platform.x_display_problem(":4711") == (
        "cannot connect to the X display :4711 (DISPLAY)")


@pytest.mark.slow
def test_the_app_without_a_display_exits_1_with_one_line_not_a_core_dump(chelsea):
    result = run_app(str(chelsea), env=app_env(DISPLAY=None, QT_QPA_PLATFORM=None,
                                               WAYLAND_DISPLAY=None))
    assert result.returncode == 1, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "QT_QPA_PLATFORM=offscreen" in lines[0]


# ------------------------------------------------------------------------------- geometry


def test_a_window_larger_than_the_screen_is_shrunk_into_its_free_area():
    available = QRect(0, 30, 1280, 770)  # a 1280x800 screen with a 30-pixel top bar
    rect = geometry.fitted(QRect(-100, 0, 1600, 1000), available)
    frame = geometry.FRAME
    assert available.contains(rect.marginsAdded(frame))
    assert rect.size() == QSize(1280 - frame.left() - frame.right(),
                                770 - frame.top() - frame.bottom())


def test_a_window_that_fits_keeps_its_size_and_is_only_moved_onto_the_screen():
    available = QRect(0, 0, 1440, 900)
    assert geometry.fitted(QRect(100, 100, 800, 600), available) == QRect(100, 100, 800, 600)
    moved = geometry.fitted(QRect(1000, 500, 800, 600), available, QMargins())
    assert moved == QRect(640, 300, 800, 600)


def test_the_geometry_a_window_was_closed_with_is_restored(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    first = QWidget()
    qtbot.addWidget(first)
    first.setGeometry(QRect(40, 60, 900, 700))
    geometry.remember(first, settings)
    settings.sync()
    second = QWidget()
    qtbot.addWidget(second)
    geometry.place(second, QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert second.geometry() == QRect(40, 60, 900, 700)
    third = QWidget()
    qtbot.addWidget(third)
    geometry.place(third, settings, QSize(1000, 640))  # an explicit size wins
    assert third.size() == QSize(1000, 640)


# --------------------------------------------------------------------- the random network


@pytest.mark.slow
def test_a_random_network_calibrated_on_a_photo_spreads_its_predictions(chelsea):
    import mlx.core as mx

    from mlx_inception import InceptionV3
    from mlx_inception.data.transforms import center_crop, normalize
    from mlx_inception.inference.calibration import calibrate_batchnorm

    mx.random.seed(0)
    model = InceptionV3(init_weights=True)
    model.eval()
    preprocessing = model.config.preprocessing
    image = normalize(np.asarray(center_crop(Image.open(chelsea).convert("RGB"),
                                             preprocessing)), preprocessing)[None]
    before = np.asarray(mx.softmax(model(mx.array(image)), axis=-1))[0]
    calibrate_batchnorm(model, np.concatenate([image, image[:, :, ::-1]]))
    assert not model.training
    logits, taps = model.forward_with_taps(mx.array(image))
    after = np.asarray(mx.softmax(logits, axis=-1))[0]
    # Uncalibrated, one class takes everything; calibrated, the top class of 1000 has a few
    # percent (measured 7.1% on this photo) and the activations stay at a trained scale.
    assert before.max() > 0.99
    assert after.max() < 0.3
    for name in ("Mixed_5b", "Mixed_6e", "Mixed_7c"):
        mean = float(taps[name].mean())
        assert 0.05 < mean < 5, f"{name}: mean {mean}"
    # Each BatchNorm now holds its input's statistics over the two views: the first layer's.
    bn = model.Conv2d_1a_3x3.bn
    assert float(mx.abs(bn.running_var).max()) > 0
    assert bn.momentum == 0.1


# ----------------------------------------------------------------- weights that fail to load


def hostile_weights(tmp_path: Path) -> dict[str, Path]:
    import mlx.core as mx
    import torch

    from mlx_inception import InceptionV3, InceptionV3Config, Preprocessing
    from mlx_inception.checkpoints.store import save_model

    page = tmp_path / "page.pth"
    page.write_text("<!DOCTYPE html><html><body>404: not found</body></html>")
    integer_key = tmp_path / "integer-key.pth"
    torch.save({1: torch.zeros(3)}, integer_key)
    mx.random.seed(0)
    small = InceptionV3(InceptionV3Config(preprocessing=Preprocessing(resize_size=122,
                                                                      crop_size=107)))
    negative = save_model(small, tmp_path / "negative")
    config = json.loads((negative / "config.json").read_text())
    (negative / "config.json").write_text(json.dumps({**config, "num_classes": -3}))
    return {"page": page, "integer key": integer_key, "negative classes": negative}


@pytest.mark.slow
@pytest.mark.parametrize("case", ["page", "integer key", "negative classes"])
def test_a_screenshot_with_weights_that_fail_to_load_exits_1_with_the_red_line(
        tmp_path, chelsea, case):
    weights = hostile_weights(tmp_path)[case]
    out = tmp_path / "out.png"
    result = run_app(str(chelsea), "--weights", str(weights), "--screenshot", str(out),
                     env=app_env(QT_QPA_PLATFORM="offscreen"))
    assert result.returncode == 1, result.stdout + result.stderr
    last = error_lines(result.stderr)[-1]
    assert last.startswith("error: Could not load weights: ")
    assert out.exists()  # the window, with the red line, is still saved


# --------------------------------------------------------------------------- a real window


def free_display() -> int:
    """Return an X display number no server uses on this machine."""
    for number in range(90, 190):
        if not (Path(f"/tmp/.X{number}-lock").exists()
                or Path(f"/tmp/.X11-unix/X{number}").exists()):
            return number
    raise RuntimeError("no free X display number in :90 .. :189")


def need_a_window_system() -> None:
    """Skip (fail in CI) when this machine cannot run the app under Xvfb."""
    missing = None
    if shutil.which("Xvfb") is None:
        missing = "Xvfb is not installed (Debian: apt-get install xvfb)"
    else:
        lacking = qt_platform._missing(qt_platform.XCB_LIBRARIES, qt_platform.loads)
        if lacking:
            missing = lacking
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the app in a real window: {missing}")
        pytest.skip(missing)


@pytest.fixture(scope="module", params=SCREENS, ids=lambda size: f"{size[0]}x{size[1]}")
def xvfb(request):
    """An Xvfb server with one screen of the given size: yields (DISPLAY, (width, height))."""
    need_a_window_system()
    width, height = request.param
    number = free_display()
    display = f":{number}"
    server = subprocess.Popen(["Xvfb", display, "-screen", "0", f"{width}x{height}x24",
                               "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + XVFB_DEADLINE_S
        while qt_platform.x_display_problem(display, timeout=1.0) is not None:
            if server.poll() is not None:
                pytest.fail(f"Xvfb {display} exited: {server.stderr.read().decode()[-500:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"Xvfb {display} did not answer within {XVFB_DEADLINE_S} s")
            time.sleep(0.1)
        yield display, (width, height)
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


def screenshot_with_layout(folder: Path, image: Path, env: dict[str, str],
                           *extra: str) -> tuple[dict, Path]:
    out, layout = folder / "window.png", folder / "layout.json"
    result = run_app(str(image), "--weights", "random", "--screenshot", str(out),
                     "--layout", str(layout), *extra, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(layout.read_text()), out


def inside(inner: list[int], outer: list[int]) -> bool:
    x, y, width, height = inner
    left, top, outer_width, outer_height = outer
    return (x >= left and y >= top and x + width <= left + outer_width
            and y + height <= top + outer_height)


def relative(rect: list[int], origin: list[int]) -> list[int]:
    return [rect[0] - origin[0], rect[1] - origin[1], rect[2], rect[3]]


@pytest.fixture(scope="module")
def on_screen(xvfb, chelsea, tmp_path_factory):
    """The app run under xcb on the Xvfb screen: its layout report and window screenshot."""
    display, size = xvfb
    folder = tmp_path_factory.mktemp(f"xcb-{size[0]}x{size[1]}")
    env = app_env(DISPLAY=display, QT_QPA_PLATFORM="xcb", WAYLAND_DISPLAY=None)
    report, picture = screenshot_with_layout(folder, chelsea, env)
    return report, picture, size


@pytest.mark.slow
def test_the_app_opens_under_x_and_shows_predictions(on_screen):
    report, picture, size = on_screen
    assert report["platform"] == "xcb"
    assert report["screen"] == [0, 0, *size]
    assert report["title"] == "mlx-inception — chelsea.png"
    assert len(report["predictions"]) == 5
    assert Image.open(picture).size == tuple(report["window"][2:])


@pytest.mark.slow
def test_the_window_and_every_panel_widget_lie_within_the_screen(on_screen):
    report, _, _ = on_screen
    screen = report["available"]
    assert inside(report["frame"], screen), report["frame"]
    for name, panel in report["panels"].items():
        assert inside(panel["rect"], screen), name
        assert len(panel["widgets"]) > 3, name
        for key, rect in panel["widgets"].items():
            if rect[2] > 0 and rect[3] > 0:
                # Within the panel too: nothing runs past its panel's edge.
                assert inside(rect, panel["rect"]), f"{name} {key} {rect} {panel['rect']}"


@pytest.mark.slow
def test_the_layout_on_screen_is_the_offscreen_layout(on_screen, chelsea, tmp_path):
    report, picture, _ = on_screen
    width, height = report["window"][2:]
    offscreen, offscreen_picture = screenshot_with_layout(
        tmp_path, chelsea, app_env(QT_QPA_PLATFORM="offscreen"), "--size", f"{width}x{height}")
    assert offscreen["platform"] == "offscreen"
    for name, panel in report["panels"].items():
        other = offscreen["panels"][name]
        assert (relative(panel["rect"], report["window"])
                == relative(other["rect"], offscreen["window"])), name
        assert set(panel["widgets"]) == set(other["widgets"]), name
        for key, rect in panel["widgets"].items():
            assert (relative(rect, report["window"])
                    == relative(other["widgets"][key], offscreen["window"])), f"{name} {key}"
    # What the X server shows where the window is: the window as offscreen draws it (the
    # status line's timing differs; the rest is the same pixels up to font rendering).
    x, y, w, h = report["window"]
    grab = Image.open(report["screen_grab"]).convert("RGB")
    assert grab.size == tuple(report["screen"][2:])
    shown = np.asarray(grab.crop((x, y, x + w, y + h)), dtype=np.float32)
    drawn = np.asarray(Image.open(offscreen_picture).convert("RGB"), dtype=np.float32)
    assert float(np.abs(shown - drawn).mean()) < 2.0  # measured 0.01; a blank screen: 30+


@pytest.mark.parametrize("page", ["README.md", "docs/app.md"])
def test_the_docs_list_every_package_the_platform_check_asks_for(page):
    text = (Path(__file__).resolve().parents[2] / page).read_text(encoding="utf-8")
    missing = [name for name in qt_platform.DEBIAN_PACKAGES if f" {name} " not in
               text.replace("\\\n", " ").replace("\n", " ")]
    assert not missing, f"{page} does not list {missing}"
