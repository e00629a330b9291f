"""The main window's menus and toolbar, and the save dialogs behind its Export menu."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu

from .session import RANDOM_WEIGHTS

if TYPE_CHECKING:
    from .window import MainWindow

PANELS = (("input", "Input"), ("predictions", "Predictions"), ("network", "Network"),
          ("channel", "Channel"), ("gradcam", "Grad-CAM"))


def _action(window: MainWindow, menu: QMenu, text: str, slot: Callable, shortcut=None,
            tip: str = "") -> QAction:
    action = QAction(text, window)
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    action.setStatusTip(tip)
    action.triggered.connect(slot)
    menu.addAction(action)
    return action


def build_menus(window: MainWindow) -> QMenu:
    """Give ``window`` its File, Weights and Export menus and toolbar; return File ▸ Open recent."""
    menus = window.menuBar()
    toolbar = window.addToolBar("Main")
    toolbar.setMovable(False)

    file = menus.addMenu("&File")
    open_action = _action(window, file, "&Open image…", window.choose_image,
                          QKeySequence.StandardKey.Open)
    recent = file.addMenu("Open &recent")
    paste = _action(window, file, "&Paste image", window.paste, QKeySequence.StandardKey.Paste)
    file.addSeparator()
    previous = _action(window, file, "Previous image in folder", window.previous_image,
                       Qt.Key.Key_PageUp)
    following = _action(window, file, "Next image in folder", window.next_image,
                        Qt.Key.Key_PageDown)
    file.addSeparator()
    _action(window, file, "&Quit", window.close, QKeySequence.StandardKey.Quit)

    weights = menus.addMenu("&Weights")
    choose = _action(window, weights, "&Choose weights…", window.choose_weights, "Ctrl+W")
    _action(window, weights, "Random initialisation (no weights)",
            lambda: window.load_weights(RANDOM_WEIGHTS))

    exports = menus.addMenu("&Export")
    _action(window, exports, "Window as PNG…", lambda: ask_png(window, "window"))
    for name, label in PANELS:
        _action(window, exports, f"{label} panel as PNG…",
                lambda checked=False, n=name: ask_png(window, n))
    exports.addSeparator()
    _action(window, exports, "Predictions as CSV…", lambda: ask_file(
        window, "Predictions as CSV", "CSV (*.csv)", ".csv", window.export_predictions_csv))
    _action(window, exports, "Predictions as JSON…", lambda: ask_file(
        window, "Predictions as JSON", "JSON (*.json)", ".json", window.export_predictions_json))
    _action(window, exports, "Shown module's activations as .npz…", lambda: ask_file(
        window, "Activations", "NumPy archive (*.npz)", ".npz",
        lambda p: window.export_activations(p, module_only=True)))
    _action(window, exports, "All activations as .npz…", lambda: ask_file(
        window, "Activations", "NumPy archive (*.npz)", ".npz", window.export_activations))

    for action in (open_action, paste, previous, following, choose):
        toolbar.addAction(action)
    previous.setText("◀ Previous")
    following.setText("Next ▶")
    open_action.setIconText("Open…")
    paste.setIconText("Paste")
    choose.setIconText("Weights…")
    return recent


def ask_file(window: MainWindow, title: str, pattern: str, suffix: str,
             write: Callable[[str], object]) -> None:
    """Ask where to save, named after the image shown, and ``write(path)`` there."""
    stem = Path(window.analysis.name).stem if window.analysis else "mlx-inception"
    path, _ = QFileDialog.getSaveFileName(window, title, f"{stem}{suffix}", pattern)
    if path:
        try:
            write(path)
        except (OSError, ValueError) as error:
            window.show_error(f"Could not save {path}: {error}")


def ask_png(window: MainWindow, panel: str) -> None:
    """Ask where to save the window or one panel as a PNG, and save it."""
    ask_file(window, f"Save {panel} as PNG", "PNG image (*.png)", f"-{panel}.png",
             lambda path: window.export_png(path, panel))
