"""The main window: open an image any way a user has one, see what every branch makes of it.

Every request goes to ``workers.Worker`` (network work on its compute thread, weights downloads
on their own thread, web images and exports on an io thread); the window only draws the numpy
results that come back, and only those of the newest request of each kind. Requests of
different kinds that answer the same question cancel each other: opening a file drops a web
image still downloading, choosing local weights drops a weights download, and each result is
drawn with the source it was asked for, never with what was asked for later.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QMimeData, QSettings, Qt, QTimer, QUrl
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QImage, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QLabel,
    QMainWindow,
    QProgressBar,
    QSizePolicy,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from mlx_inception.data.images import IMAGE_EXTENSIONS, is_image_file
from mlx_inception.errors import ImageError
from mlx_inception.inference.gradcam import DEFAULT_LAYER

from . import export
from .dialogs import WeightsDialog
from .panels import ChannelPanel, GradCamPanel, InputPanel, NetworkPanel, PredictionsPanel
from .session import (
    RANDOM_WEIGHTS,
    Analysis,
    GradCamResult,
    ModelSession,
    WeightsInfo,
    cached_weights,
    download_weights,
    is_local_source,
)
from .widgets import qimage_to_array
from .workers import DOWNLOAD, IO, Worker

MAX_RECENT = 10
# Images fetched from a browser drop larger than this are refused (a page, not a picture).
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
IMAGE_FILTER = "Images ({});;All files (*)".format(" ".join(f"*{e}" for e in IMAGE_EXTENSIONS))
_IMG_SRC = re.compile(r"""<img[^>]+src\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
# Where a dragged HTML fragment came from: a <base href>, or the "SourceURL:" line of the
# clipboard's HTML format on Windows. Relative image addresses are resolved against it.
_BASE_HREF = re.compile(r"""<base[^>]+href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_SOURCE_URL = re.compile(r"^SourceURL:(\S+)", re.MULTILINE)
WEB_SCHEMES = ("http", "https", "data")

STYLE = """
QMainWindow, QWidget { background: #1e1f22; color: #e6e6e6; font-size: 13px; }
QFrame#panel { background: #26282c; border: 1px solid #34373d; border-radius: 6px; }
QLabel#panelTitle { font-size: 15px; font-weight: 600; color: #ffffff; background: transparent; }
QLabel#heading { color: #d8dadf; background: transparent; }
QLabel#caption { color: #a0a4ab; background: transparent; font-size: 12px; }
QLabel#branchTitle { color: #cfd3da; background: transparent; font-weight: 600; }
QLabel#banner { padding: 7px 10px; border-radius: 5px; background: #24384f; color: #dbe9f8; }
QLabel#banner[warning="true"] { background: #5a4317; color: #ffe7b0; }
QLabel#error { padding: 7px 10px; border-radius: 5px; background: #5c2327; color: #ffd9db; }
QTreeWidget, QListWidget, QLineEdit, QComboBox {
    background: #1b1c1f; border: 1px solid #3a3d43; border-radius: 4px; padding: 2px;
    selection-background-color: #2f5f8f; }
QHeaderView::section { background: #26282c; color: #a0a4ab; border: none; padding: 3px; }
QPushButton { background: #34373d; border: 1px solid #464a51; border-radius: 4px;
    padding: 4px 10px; }
QPushButton:hover { background: #3d4148; }
QPushButton:disabled { color: #6b6f76; }
QToolBar { background: #26282c; border: none; spacing: 4px; padding: 3px; }
QToolButton { padding: 4px 8px; border-radius: 4px; }
QToolButton:hover { background: #3a3d43; }
QStatusBar { background: #26282c; color: #a0a4ab; }
QSplitter::handle { background: #1e1f22; }
QMenuBar { background: #26282c; }
QMenu { background: #26282c; border: 1px solid #3a3d43; }
QMenu::item:selected { background: #2f5f8f; }
QProgressBar { border: 1px solid #3a3d43; border-radius: 3px; background: #1b1c1f;
    max-height: 12px; }
QProgressBar::chunk { background: #4c9be8; }
QSlider::groove:horizontal { height: 4px; background: #3a3d43; border-radius: 2px; }
QSlider::handle:horizontal { background: #4c9be8; width: 12px; margin: -5px 0; border-radius: 6px; }
"""


def natural_key(path: Path) -> list[Any]:
    """Sort key that puts img2 before img10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def folder_images(folder: Path) -> list[Path]:
    """Return the image files of ``folder`` in natural name order."""
    try:
        entries = [p for p in folder.iterdir() if p.is_file() and is_image_file(p)]
    except OSError:
        return []
    return sorted(entries, key=natural_key)


def html_image_url(html: str) -> tuple[str | None, str | None]:
    """Return (the address of the first image in ``html`` that can be fetched, a skipped one).

    A relative ``src`` is resolved against the page's address when the fragment names it
    (``<base href>`` or a ``SourceURL:`` header) and skipped otherwise: a dragged fragment
    alone does not say which server it came from.
    """
    found = _BASE_HREF.search(html) or _SOURCE_URL.search(html)
    base = found.group(1) if found else None
    if base and urllib.parse.urlparse(base).scheme not in ("http", "https"):
        base = None
    skipped = None
    for match in _IMG_SRC.finditer(html):
        src = match.group(1).strip()
        if urllib.parse.urlparse(src).scheme in WEB_SCHEMES:
            return src, skipped
        if base:
            return urllib.parse.urljoin(base, src), skipped
        skipped = skipped or src
    return None, skipped


def url_name(url: str) -> str:
    """Return a short name for an image's web address: its file name, or what it is."""
    if url.startswith("data:"):
        return "dropped image"
    return Path(urllib.parse.urlparse(url).path).name or "image from the web"


def fetch_url(url: str, timeout: float = 20.0) -> bytes:
    """Return the bytes at an http(s) or data: URL (an image dragged from a web page)."""
    if urllib.parse.urlparse(url).scheme not in WEB_SCHEMES:
        raise ImageError(f"{url}: not a web address (http, https or data)")
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        try:
            if header.endswith(";base64"):
                return base64.b64decode(payload, validate=False)
            return urllib.parse.unquote_to_bytes(payload)
        except (binascii.Error, ValueError) as error:
            raise ImageError(f"dropped data URL cannot be decoded ({error})") from None
    request = urllib.request.Request(url, headers={"User-Agent": "mlx-inception-app"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except OSError as error:
        reason = getattr(error, "reason", None) or error
        raise ImageError(f"{url}: cannot download ({reason})") from None
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise ImageError(f"{url}: more than {MAX_DOWNLOAD_BYTES >> 20} MB, not opened")
    return data


class MainWindow(QMainWindow):
    """Classify an image and look inside every Inception module and branch."""

    def __init__(
        self,
        weights: str | None = None,
        module: str | None = None,
        settings: QSettings | None = None,
    ):
        super().__init__()
        self.settings = settings or QSettings("mlx-inception", "mlx-inception-app")
        self.session = ModelSession()  # used on the worker's compute thread only
        # No Qt parent: the worker outlives the window until its threads have ended.
        self.worker = Worker(on_compute_exit=self.session.close)
        self.worker.finished.connect(self._finished)
        self.worker.failed.connect(self._failed)
        self.worker.done.connect(self._done)
        self.worker.progress.connect(self._progress)
        self.worker.busy_changed.connect(self._busy)
        self._outstanding = 0
        self._request = 0
        # What each request in flight was for (its source), by generation: a result is drawn
        # and named with its own, never with what the window asked for since.
        self._contexts: dict[int, Any] = {}

        self.info: WeightsInfo | None = None
        self.analysis: Analysis | None = None
        self.grad_cam_result: GradCamResult | None = None
        self.target_class: int | None = None
        self.gradcam_layer = DEFAULT_LAYER
        self.initial_module = module or DEFAULT_LAYER
        self.last_error: str | None = None
        self._source: Any = None  # the image last asked for (shown, loading or failed)
        self._source_name: str | None = None
        self._weights_source: str | None = None  # the weights last asked for (the dialog's)

        self.setWindowTitle("mlx-inception")
        self.setAcceptDrops(True)
        self.setStyleSheet(STYLE)
        self._build()
        self._build_actions()
        self.resize(1600, 1000)

        sources = [weights] if weights else self._startup_sources()
        if weights:
            self.load_weights(weights)
        else:
            self._submit("weights", self.session.load_first, sources,
                         description="loading the network")

    # --- layout -------------------------------------------------------------------------------

    def _build(self) -> None:
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(8, 8, 8, 4)
        layout.setSpacing(6)
        self.banner = QLabel("Loading the network…")
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.error_label = QLabel()
        self.error_label.setObjectName("error")
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        layout.addWidget(self.banner)
        layout.addWidget(self.error_label)

        self.input_panel = InputPanel()
        self.predictions_panel = PredictionsPanel()
        self.network_panel = NetworkPanel()
        self.channel_panel = ChannelPanel()
        self.gradcam_panel = GradCamPanel()

        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.input_panel)
        left.addWidget(self.predictions_panel)
        left.setSizes([330, 600])
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.gradcam_panel)
        right.addWidget(self.channel_panel)
        right.setSizes([520, 420])
        columns = QSplitter(Qt.Orientation.Horizontal)
        columns.addWidget(left)
        columns.addWidget(self.network_panel)
        columns.addWidget(right)
        columns.setStretchFactor(1, 1)
        self.columns = columns
        layout.addWidget(columns, 1)
        self.setCentralWidget(central)

        self.status_text = QLabel("")
        self.busy_text = QLabel("")
        for label in (self.status_text, self.busy_text):
            # Long messages are cut, never allowed to widen the window.
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.busy_text.setMinimumWidth(260)
        self.busy_bar = QProgressBar()
        self.busy_bar.setFixedWidth(160)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.hide()
        self.statusBar().addWidget(self.status_text, 1)
        self.statusBar().addPermanentWidget(self.busy_text)
        self.statusBar().addPermanentWidget(self.busy_bar)

        self.predictions_panel.class_chosen.connect(self.set_target_class)
        self.network_panel.channel_selected.connect(self._show_channel)
        self.network_panel.gradcam_requested.connect(self.set_gradcam_layer)
        self.network_panel.hover_text.connect(self._hover)
        self.network_panel.colormap.currentIndexChanged.connect(self._recolour_channel)
        self.gradcam_panel.layer_changed.connect(self.set_gradcam_layer)

        self.panels = {
            "input": self.input_panel,
            "predictions": self.predictions_panel,
            "network": self.network_panel,
            "channel": self.channel_panel,
            "gradcam": self.gradcam_panel,
        }

    def _action(self, menu, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setStatusTip(tip)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _build_actions(self) -> None:
        menus = self.menuBar()
        toolbar = self.addToolBar("Main")
        toolbar.setMovable(False)

        file = menus.addMenu("&File")
        self.open_action = self._action(file, "&Open image…", self.choose_image,
                                        QKeySequence.StandardKey.Open)
        self.recent_menu = file.addMenu("Open &recent")
        self.paste_action = self._action(file, "&Paste image", self.paste,
                                         QKeySequence.StandardKey.Paste)
        file.addSeparator()
        self.previous_action = self._action(file, "Previous image in folder", self.previous_image,
                                            Qt.Key.Key_PageUp)
        self.next_action = self._action(file, "Next image in folder", self.next_image,
                                        Qt.Key.Key_PageDown)
        file.addSeparator()
        self._action(file, "&Quit", self.close, QKeySequence.StandardKey.Quit)

        weights = menus.addMenu("&Weights")
        self.weights_action = self._action(weights, "&Choose weights…", self.choose_weights,
                                           "Ctrl+W")
        self._action(weights, "Random initialisation (no weights)",
                     lambda: self.load_weights(RANDOM_WEIGHTS))

        exports = menus.addMenu("&Export")
        self._action(exports, "Window as PNG…", lambda: self._ask_png("window"))
        for name, label in (("input", "Input"), ("predictions", "Predictions"),
                            ("network", "Network"), ("channel", "Channel"),
                            ("gradcam", "Grad-CAM")):
            self._action(exports, f"{label} panel as PNG…",
                         lambda checked=False, n=name: self._ask_png(n))
        exports.addSeparator()
        self._action(exports, "Predictions as CSV…", lambda: self._ask_file(
            "Predictions as CSV", "CSV (*.csv)", ".csv", self.export_predictions_csv))
        self._action(exports, "Predictions as JSON…", lambda: self._ask_file(
            "Predictions as JSON", "JSON (*.json)", ".json", self.export_predictions_json))
        self._action(exports, "Shown module's activations as .npz…", lambda: self._ask_file(
            "Activations", "NumPy archive (*.npz)", ".npz",
            lambda p: self.export_activations(p, module_only=True)))
        self._action(exports, "All activations as .npz…", lambda: self._ask_file(
            "Activations", "NumPy archive (*.npz)", ".npz", self.export_activations))

        for action in (self.open_action, self.paste_action, self.previous_action,
                       self.next_action, self.weights_action):
            toolbar.addAction(action)
        self.previous_action.setText("◀ Previous")
        self.next_action.setText("Next ▶")
        self.open_action.setIconText("Open…")
        self.paste_action.setIconText("Paste")
        self.weights_action.setIconText("Weights…")
        self._rebuild_recent()

    # --- requests -----------------------------------------------------------------------------

    def _submit(self, kind: str, function, *args, lane: str = "compute",
                description: str = "", context: Any = None, **kwargs) -> int:
        """Queue a job; ``context`` (what it is for) comes back with its result or failure."""
        self._outstanding += 1
        generation = self.worker.submit(kind, function, *args, lane=lane,
                                        description=description, **kwargs)
        self._contexts[generation] = context
        return generation

    def is_settled(self) -> bool:
        """Return True when every request has come back and been drawn."""
        return self._outstanding == 0

    def _startup_sources(self) -> list[str]:
        """Return weights to try at startup, without downloading: last used, cached default."""
        sources = []
        last = self.settings.value("weights/last", "", type=str)
        if last and last != RANDOM_WEIGHTS:
            if is_local_source(last):
                sources.append(last)
            else:
                try:
                    cached = cached_weights(last)
                except Exception:  # a broken cache must never stop the app from opening
                    cached = None
                if cached:
                    sources.append(cached)
        try:
            from mlx_inception.checkpoints import registry

            default = cached_weights(registry.default_name())
        except Exception:
            default = None
        if default and default not in sources:
            sources.append(default)
        return sources

    def load_weights(self, source: str) -> None:
        """Load weights from a registry name, repo id, folder, checkpoint or "random"."""
        local = source != RANDOM_WEIGHTS and is_local_source(source)
        if local:  # remembered as an absolute path: the next start may run elsewhere
            source = os.path.abspath(os.path.expanduser(source))
        self._weights_source = source
        self.banner.setText(f"Loading weights: {source}…")
        if source == RANDOM_WEIGHTS or local:
            # The newest choice wins: a download still running is stopped and its result
            # dropped (it would otherwise replace these weights when it finishes).
            self.worker.cancel("download")
            self._submit("weights", self.session.load_weights,
                         None if source == RANDOM_WEIGHTS else source,
                         description=f"loading {source}", context=source)
        else:
            self.worker.cancel("weights")  # loads asked for earlier and not yet started
            self._submit("download", download_weights, source, lane=DOWNLOAD,
                         description=f"downloading {source}", context=source)

    def open_path(self, path: str | os.PathLike) -> None:
        """Open an image file (the path every file drop, dialog and recent entry takes)."""
        # Absolute: recent files must still open from another working directory.
        path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
        if path.is_dir():  # a dropped folder: its first image, then PgDn through the rest
            images = folder_images(path)
            if not images:
                self.show_error(f"{path} holds no image files")
                return
            path = images[0]
        self.worker.cancel("fetch")  # a web image still downloading was asked for earlier
        self._open(str(path), path.name)

    def open_bytes(self, data: bytes, name: str) -> None:
        """Open the bytes of an image file."""
        self.worker.cancel("fetch")
        self._open(data, name)

    def open_array(self, pixels: np.ndarray, name: str) -> None:
        """Open uint8 RGB (H, W, 3) or RGBA (H, W, 4) pixels (RGBA is composited on white)."""
        self.worker.cancel("fetch")
        self._open(pixels, name)

    def open_url(self, url: str) -> None:
        """Open an image from a web address (dragged from a browser); fetched off the GUI."""
        self._submit("fetch", fetch_url, url, lane=IO,
                     description=f"downloading {url_name(url)}", context=url)

    def _open(self, source: Any, name: str) -> None:
        self._source, self._source_name = source, name
        if self.info is None:
            return  # analysed as soon as the network is loaded
        self._request += 1
        self.worker.cancel("gradcam")  # its image is about to be replaced
        self._submit("analyse", self.session.analyse, self._request, source, name,
                     description=f"classifying {name}", context=(source, name))

    def set_target_class(self, index: int) -> None:
        """Make ``index`` the class Grad-CAM explains."""
        self.target_class = int(index)
        self.predictions_panel.set_target(self.target_class)
        self.request_grad_cam()

    def set_gradcam_layer(self, layer: str) -> None:
        """Compute Grad-CAM at ``layer`` (a module such as Mixed_6e, or one branch)."""
        if self.info is not None and layer not in self.info.layers:
            self.show_error(f"Grad-CAM needs a spatial layer; {layer} is not one")
            return
        self.gradcam_layer = layer
        if self.gradcam_panel.layer() != layer:
            self.gradcam_panel.set_layer(layer, notify=False)
        self.request_grad_cam()

    def request_grad_cam(self) -> None:
        if self.analysis is None:
            return
        target = self.target_class
        name = "the top class" if target is None else (
            self.info.labels[target] if self.info and self.info.labels else f"class {target}"
        )
        self.gradcam_panel.set_pending(f"computing Grad-CAM for {name} at {self.gradcam_layer}…")
        self._submit("gradcam", self.session.grad_cam, self.analysis.request, target,
                     self.gradcam_layer, description=f"Grad-CAM at {self.gradcam_layer}")

    # --- results ------------------------------------------------------------------------------

    def _done(self, kind: str, generation: int) -> None:
        self._contexts.pop(generation, None)
        self._outstanding = max(0, self._outstanding - 1)

    def _finished(self, kind: str, generation: int, result: Any) -> None:
        context = self._contexts.get(generation)
        if kind == "weights":
            # Drawn even when a newer choice made it stale: the compute thread has switched to
            # these weights, and the window must describe the network it runs. The newer
            # choice replaces them when it arrives (a cancelled download never does).
            self._weights_loaded(result, context)
            return
        if not self.worker.is_current(kind, generation):
            return
        if kind == "download":
            self._submit("weights", self.session.load_weights, result,
                         description=f"loading {context}", context=context)
        elif kind == "fetch":
            self._open(result, url_name(context))
        elif kind == "analyse":
            self._analysed(result)
        elif kind == "gradcam":
            if self.analysis is not None and result.request == self.analysis.request:
                self.grad_cam_result = result
                self.gradcam_panel.show_result(result, self.analysis.crop)
                self.predictions_panel.set_target(result.class_index)
        elif kind.startswith("export"):
            self.status_text.setText(f"Saved {result}")

    def _failed(self, kind: str, generation: int, message: str) -> None:
        if not self.worker.is_current(kind, generation):
            return
        context = self._contexts.get(generation)
        if kind == "gradcam":
            self.gradcam_panel.set_pending(f"Grad-CAM failed: {message}")
            return
        if kind in ("weights", "download"):
            self._show_weights(self.info)
            self.show_error(f"Could not load weights: {message}")
            if self.info is None:
                self._submit("weights", self.session.load_weights, None,
                             description="loading a randomly initialised network")
            return
        if kind == "fetch":
            # fetch_url's messages begin with the address; others get it put in front.
            named = message if message.startswith(str(context)) else (
                f"{_short(context)}: {message}")
            self.show_error(f"Could not open {named}")
            return
        if kind == "analyse":
            source, name = context
            self.show_error(f"Could not open {name}: {message}")
            if isinstance(source, str) and not os.path.exists(source):
                self._forget(source)  # a recent file that has gone: no longer offered
            return
        self.show_error(message)

    def _progress(self, kind: str, generation: int, fraction: float, text: str) -> None:
        if fraction < 0:
            self.busy_bar.setRange(0, 0)
        else:
            self.busy_bar.setRange(0, 1000)
            self.busy_bar.setValue(int(1000 * fraction))
        if text:
            self.busy_text.setText(text)

    def _busy(self, busy: bool, description: str) -> None:
        self.busy_bar.setVisible(busy)
        if busy:
            self.busy_bar.setRange(0, 0)
            if description:
                self.busy_text.setText(description + "…")
        else:
            self.busy_text.setText("")

    def show_error(self, message: str) -> None:
        self.last_error = message
        self.error_label.setText(message)
        self.error_label.show()
        self.status_text.setText(message)

    def clear_error(self) -> None:
        self.last_error = None
        self.error_label.hide()

    def _show_weights(self, info: WeightsInfo | None) -> None:
        """Say in the banner what network is loaded (in orange when it is not a trained one)."""
        if info is None:
            self.banner.setProperty("warning", True)
            self.banner.setText("No network loaded yet")
        elif info.pretrained:
            self.banner.setProperty("warning", False)
            self.banner.setText(f"Weights: {info.description}")
        else:
            self.banner.setProperty("warning", True)
            self.banner.setText(
                "No pretrained weights loaded: this is a randomly initialised Inception-v3, so "
                "its predictions mean nothing; the maps show what untrained filters respond to. "
                "Choose weights with Weights ▸ Choose weights… (a registry name such as "
                "inception_v3.tv_in1k, a converted folder or a .pth/.safetensors file)."
            )
        self.banner.style().unpolish(self.banner)
        self.banner.style().polish(self.banner)

    def _weights_loaded(self, info: WeightsInfo, source: str | None) -> None:
        """Show ``info``, loaded for ``source`` (what the user chose; None: the startup's)."""
        self.info = info
        self.worker.cancel("gradcam")  # a Grad-CAM of the previous network's analysis
        if info.pretrained and source is not None:
            self.settings.setValue("weights/last", source)
        self._show_weights(info)
        if info.notes:
            self.show_error("Weights not used: " + "; ".join(info.notes))
        self.network_panel.set_network(info)
        if self.initial_module:
            try:
                self.network_panel.select(self.initial_module)
            except ValueError as error:
                self.show_error(str(error))
            self.initial_module = None
        if self.gradcam_layer not in info.layers:
            self.gradcam_layer = DEFAULT_LAYER
        self.gradcam_panel.set_network(info, self.gradcam_layer)
        self.status_text.setText(f"Loaded {info.description}")
        if self._source is not None:
            self._open(self._source, self._source_name or "image")

    def _analysed(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.clear_error()
        self.target_class = None
        self.grad_cam_result = None
        self.input_panel.show_analysis(analysis, self.info)
        labels = self.info.labels if self.info else None
        self.predictions_panel.show_analysis(analysis, labels)
        self.network_panel.set_taps(analysis.taps)
        self.channel_panel.clear()
        self.gradcam_panel.clear()
        self.setWindowTitle(f"mlx-inception — {analysis.name}")
        top = analysis.top_k[0]
        self.status_text.setText(
            f"{analysis.name}: {top.label or top.index} ({100 * top.probability:.1f}%) · "
            f"{analysis.seconds:.2f} s"
        )
        if analysis.path:
            self._remember(analysis.path)
        self._restore_channel()
        self.request_grad_cam()

    # --- channels and hovering ----------------------------------------------------------------

    def _show_channel(self, key: str, channel: int) -> None:
        if self.analysis is None or key not in self.analysis.taps:
            return
        self.channel_panel.show_channel(key, channel, self.analysis.taps[key], self.analysis.crop,
                                        self.network_panel.colormap_name())

    def _restore_channel(self) -> None:
        selected = self.network_panel.selected
        if selected and self.analysis and selected[0] in self.analysis.taps:
            self._show_channel(*selected)

    def _recolour_channel(self) -> None:
        if self.channel_panel.key is not None:
            self._show_channel(self.channel_panel.key, self.channel_panel.channel)

    def _hover(self, text: str) -> None:
        if text:
            self.status_text.setText(text)

    # --- input: dialogs, drops, clipboard, folders, recent files -------------------------------

    def choose_image(self) -> None:
        start = self.settings.value("folders/images", "", type=str)
        path, _ = QFileDialog.getOpenFileName(self, "Open an image", start, IMAGE_FILTER)
        if path:
            self.settings.setValue("folders/images", str(Path(path).parent))
            self.open_path(path)

    def open_mime(self, mime: QMimeData, origin: str = "dropped") -> bool:
        """Open what a drop or the clipboard holds: files, image data, web addresses.

        Returns False (and says why in the window) when there is nothing to open.
        """
        urls = mime.urls() if mime.hasUrls() else []
        for url in urls:
            if url.isLocalFile():
                self.open_path(url.toLocalFile())
                return True
        if mime.hasImage():
            image = mime.imageData()
            if isinstance(image, QImage) and not image.isNull():
                # Transparency kept: the package composites it on white, as for files.
                self.open_array(qimage_to_array(image), f"{origin} image")
                return True
        for url in urls:
            if url.scheme() in WEB_SCHEMES:
                self.open_url(url.toString())
                return True
        skipped = None
        if mime.hasHtml():
            address, skipped = html_image_url(mime.html())
            if address:
                self.open_url(address)
                return True
        if mime.hasText():
            text = mime.text().strip()
            if text.startswith(("http://", "https://", "data:image")):
                self.open_url(text)
                return True
            local = QUrl(text).toLocalFile() if text.startswith("file:") else text
            if local and len(local) < 4096 and Path(os.path.expanduser(local)).is_file():
                self.open_path(local)
                return True
        if skipped:
            self.show_error(f"Cannot open {_short(skipped)}: the {origin} HTML gives the image's "
                            "address relative to a page it does not name; drag the image itself "
                            "or copy its full address")
            return False
        self.show_error(f"Nothing to open in what was {origin}: use an image file, image data "
                        "or an image's web address")
        return False

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt's name)
        mime = event.mimeData()
        if mime.hasUrls() or mime.hasImage() or mime.hasText() or mime.hasHtml():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        if self.open_mime(event.mimeData()):
            event.acceptProposedAction()

    def paste(self) -> None:
        self.open_mime(QApplication.clipboard().mimeData(), "pasted")

    def _neighbour(self, step: int) -> None:
        # From the image last asked for, not the last shown: an unreadable file is stepped
        # over instead of being tried again at every key press.
        if isinstance(self._source, str):
            current = self._source
        else:
            current = self.analysis.path if self.analysis and self.analysis.path else None
        if current is None:
            self.status_text.setText("Open an image file to move through its folder")
            return
        current_path = Path(current)
        images = folder_images(current_path.parent)
        if not images:
            return
        names = [p.name for p in images]
        if current_path.name in names:
            index = names.index(current_path.name) + step
        else:
            keys = [natural_key(p) for p in images]
            index = sum(k < natural_key(current_path) for k in keys) + (step if step < 0 else 0)
        if not 0 <= index < len(images):
            self.status_text.setText("First image of the folder" if step < 0
                                     else "Last image of the folder")
            return
        self.open_path(images[index])

    def next_image(self) -> None:
        self._neighbour(+1)

    def previous_image(self) -> None:
        self._neighbour(-1)

    def recent_files(self) -> list[str]:
        value = self.settings.value("recent/files", [], type=list)
        return [str(v) for v in value or []]

    def _remember(self, path: str) -> None:
        recent = [p for p in self.recent_files() if p != path]
        self.settings.setValue("recent/files", [path] + recent[: MAX_RECENT - 1])
        self._rebuild_recent()

    def _forget(self, path: str) -> None:
        recent = self.recent_files()
        if path in recent:
            self.settings.setValue("recent/files", [p for p in recent if p != path])
            self._rebuild_recent()

    def _rebuild_recent(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_files()
        for path in recent:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda checked=False, p=path: self.open_path(p))
        self.recent_menu.setEnabled(bool(recent))

    # --- weights ------------------------------------------------------------------------------

    def choose_weights(self) -> None:
        dialog = WeightsDialog(self._weights_source, self)
        if dialog.exec() and dialog.source():
            self.load_weights(dialog.source())

    # --- export -------------------------------------------------------------------------------

    def _ask_file(self, title: str, pattern: str, suffix: str, write) -> None:
        stem = Path(self.analysis.name).stem if self.analysis else "mlx-inception"
        path, _ = QFileDialog.getSaveFileName(self, title, f"{stem}{suffix}", pattern)
        if path:
            try:
                write(path)
            except (OSError, ValueError) as error:
                self.show_error(f"Could not save {path}: {error}")

    def _ask_png(self, panel: str) -> None:
        self._ask_file(f"Save {panel} as PNG", "PNG image (*.png)", f"-{panel}.png",
                       lambda path: self.export_png(path, panel))

    def _require_analysis(self) -> Analysis:
        if self.analysis is None:
            raise ValueError("open an image first")
        return self.analysis

    def export_png(self, path: str | os.PathLike, panel: str = "window") -> Path:
        """Save the whole window or one panel ("input", "predictions", "network", "channel",
        "gradcam") as a PNG."""
        widget = self if panel == "window" else self.panels[panel]
        pixmap = widget.grab()

        def write(temporary: Path) -> None:
            if not pixmap.save(str(temporary), "PNG"):
                raise OSError(f"cannot write {path}")

        saved = export.write_atomically(path, write)
        self.status_text.setText(f"Saved {saved}")
        return saved

    def export_predictions_csv(self, path: str | os.PathLike) -> Path:
        saved = export.write_predictions_csv(path, self._require_analysis(),
                                             self.info.labels if self.info else None)
        self.status_text.setText(f"Saved {saved}")
        return saved

    def export_predictions_json(self, path: str | os.PathLike) -> Path:
        saved = export.write_predictions_json(path, self._require_analysis(), self.info,
                                              self.grad_cam_result)
        self.status_text.setText(f"Saved {saved}")
        return saved

    def export_activations(self, path: str | os.PathLike, module_only: bool = False) -> None:
        """Write activations to ``path`` (.npz) on the io thread: the shown module's or all."""
        analysis = self._require_analysis()
        keys = list(self.network_panel.shown_maps()) if module_only else None
        self._request += 1
        self._submit(f"export-{self._request}", export.write_activations_npz, path, analysis,
                     keys, self.grad_cam_result, lane=IO, description=f"saving {path}")

    # --- closing ------------------------------------------------------------------------------

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        if not getattr(self, "_laid_out", False):
            # Input and predictions on the left, the network in the middle, attribution on the
            # right: a quarter, a half and a quarter of the width the window opens with.
            self._laid_out = True
            width = self.columns.width()
            self.columns.setSizes([width // 4, width - 2 * (width // 4), width // 4])

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        # The window goes at once and the settings are on disk; the worker is told to stop but
        # not waited for. Its threads finish the job they are in (possibly seconds inside MLX)
        # and end; they are not daemons, so the process outlives them and never dies inside
        # MLX (see workers.py). main() bounds that wait.
        self.settings.sync()
        self.worker.shutdown()
        super().closeEvent(event)


def _short(text: str | None, limit: int = 120) -> str:
    """Return ``text`` cut to ``limit`` characters (a data: URL can be megabytes)."""
    if text is None:
        return "the image"
    if text.startswith("data:"):
        return "the dropped image"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def wait_until_settled(window: MainWindow, callback, timeout_ms: int, on_timeout) -> QTimer:
    """Call ``callback()`` once ``window`` has drawn every result, or ``on_timeout()``."""
    timer = QTimer(window)
    elapsed = {"ms": 0}
    interval = 100

    def check() -> None:
        elapsed["ms"] += interval
        if window.is_settled() and window.info is not None:
            timer.stop()
            callback()
        elif elapsed["ms"] >= timeout_ms:
            timer.stop()
            on_timeout()

    timer.timeout.connect(check)
    timer.start(interval)
    return timer
