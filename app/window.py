"""The main window: open an image any way a user has one, see what every branch makes of it.

Every request goes to ``workers.Worker`` (network work on its compute thread, weights downloads
on their own thread, web images and exports on an io thread); the window only draws the numpy
results that come back, and only those of the newest request of each kind. Requests of
different kinds that answer the same question cancel each other: opening a file drops a web
image still downloading, choosing local weights drops a weights download, and each result is
drawn with the source it was asked for, never with what was asked for later.

What the window draws in is ``panels.Workspace``; what a drop or paste holds is read by
``sources``, the next image of a folder and the recent files come from ``navigation``, and the
menus are built in ``menus``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QMimeData, QSettings
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QLabel,
    QMainWindow,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from mlx_inception.inference.gradcam import DEFAULT_LAYER

from . import export
from .dialogs import WeightsDialog
from .geometry import place, remember
from .menus import build_menus
from .navigation import IMAGE_FILTER, RecentFiles, folder_images, neighbour
from .panels import Workspace
from .session import (
    RANDOM_WEIGHTS,
    Analysis,
    GradCamResult,
    ModelSession,
    WeightsInfo,
    download_weights,
    is_local_source,
    startup_sources,
)
from .sources import NothingToOpen, fetch_url, may_hold_an_image, read_mime, short_address, url_name
from .style import STYLE
from .widgets import Banner, BusyIndicator
from .workers import DOWNLOAD, IO, Worker


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
        self._request = 0
        # What each request in flight was for (its source), by generation: a result is drawn
        # and named with its own, never with what the window asked for since. Every request
        # is in here until it has come back and been drawn.
        self._contexts: dict[int, Any] = {}

        self.info: WeightsInfo | None = None
        self.analysis: Analysis | None = None
        self.grad_cam_result: GradCamResult | None = None
        self.target_class: int | None = None
        self.gradcam_layer = DEFAULT_LAYER
        self.initial_module = module or DEFAULT_LAYER
        self.last_error: str | None = None
        # Why the weights asked for are not the ones loaded: shown until other weights load,
        # never cleared by an image (the network shown is not the one asked for).
        self.weights_error: str | None = None
        self._source: Any = None  # the image last asked for (shown, loading or failed)
        self._source_name: str | None = None
        self._weights_source: str | None = None  # the weights last asked for (the dialog's)

        self.setWindowTitle("mlx-inception")
        self.setAcceptDrops(True)
        self.setStyleSheet(STYLE)
        self._build()
        self.recent_menu = build_menus(self)
        self.recent = RecentFiles(self.settings, self.recent_menu, self.open_path)
        place(self, self.settings)

        if weights:
            self.load_weights(weights)
        else:
            sources = startup_sources(self.settings.value("weights/last", "", type=str))
            self._submit("weights", self.session.load_first, sources,
                         description="loading the network")

    # --- layout -------------------------------------------------------------------------------

    def _build(self) -> None:
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(8, 8, 8, 4)
        layout.setSpacing(6)
        self.banner = Banner()
        self.error_label = QLabel()
        self.error_label.setObjectName("error")
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        layout.addWidget(self.banner)
        layout.addWidget(self.error_label)

        self.workspace = Workspace()
        # The panels by the names the window's users know them by.
        self.panels = self.workspace.panels
        self.input_panel, self.predictions_panel = self.panels["input"], self.panels["predictions"]
        self.network_panel, self.channel_panel = self.panels["network"], self.panels["channel"]
        self.gradcam_panel = self.panels["gradcam"]
        layout.addWidget(self.workspace, 1)
        self.setCentralWidget(central)

        self.status_text = QLabel("")
        # Long messages are cut, never allowed to widen the window.
        self.status_text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.statusBar().addWidget(self.status_text, 1)
        self.busy = BusyIndicator(self.statusBar())
        self.worker.progress.connect(
            lambda kind, generation, fraction, text: self.busy.show_progress(fraction, text))
        self.worker.busy_changed.connect(self.busy.set_busy)

        self.predictions_panel.class_chosen.connect(self.set_target_class)
        self.network_panel.gradcam_requested.connect(self.set_gradcam_layer)
        self.network_panel.hover_text.connect(self._hover)
        self.gradcam_panel.layer_changed.connect(self.set_gradcam_layer)

    # --- requests -----------------------------------------------------------------------------

    def _submit(self, kind: str, function, *args, lane: str = "compute",
                description: str = "", context: Any = None, **kwargs) -> int:
        """Queue a job; ``context`` (what it is for) comes back with its result or failure."""
        generation = self.worker.submit(kind, function, *args, lane=lane,
                                        description=description, **kwargs)
        self._contexts[generation] = context
        return generation

    def is_settled(self) -> bool:
        """Return True when every request has come back and been drawn."""
        return not self._contexts and not self.network_panel.render_pending()

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
            self.banner.describe(self.info)
            self.weights_error = f"Could not load weights: {message}"
            self.show_error(self.weights_error)
            if self.info is None:
                self._submit("weights", self.session.load_weights, None,
                             description="loading a randomly initialised network")
            return
        if kind == "fetch":
            # fetch_url's messages begin with the address; others get it put in front.
            named = message if message.startswith(str(context)) else (
                f"{short_address(context)}: {message}")
            self.show_error(f"Could not open {named}")
            return
        if kind == "analyse":
            source, name = context
            self.show_error(f"Could not open {name}: {message}")
            if isinstance(source, str) and not os.path.exists(source):
                self.recent.forget(source)  # a recent file that has gone: no longer offered
            return
        self.show_error(message)

    def show_error(self, message: str) -> None:
        self.last_error = message
        self.error_label.setText(message)
        self.error_label.show()
        self.status_text.setText(message)

    def clear_error(self) -> None:
        """Hide the red line, unless it says the weights asked for did not load."""
        self.last_error = None
        self.error_label.hide()
        if self.weights_error:
            self.show_error(self.weights_error)

    def _hover(self, text: str) -> None:
        if text:
            self.status_text.setText(text)

    def _weights_loaded(self, info: WeightsInfo, source: str | None) -> None:
        """Show ``info``, loaded for ``source`` (what the user chose; None: the startup's)."""
        self.info = info
        self.worker.cancel("gradcam")  # a Grad-CAM of the previous network's analysis
        if info.pretrained and source is not None:
            self.settings.setValue("weights/last", source)
        self.banner.describe(info)
        if source is not None:  # what the user chose, loaded: an earlier failure is over
            self.weights_error = None
        if info.notes:
            self.weights_error = "Weights not used: " + "; ".join(info.notes)
        if self.weights_error:
            self.show_error(self.weights_error)
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
        self.workspace.show_analysis(analysis, self.info)
        self.setWindowTitle(f"mlx-inception — {analysis.name}")
        top = analysis.top_k[0]
        self.status_text.setText(
            f"{analysis.name}: {top.label or top.index} ({100 * top.probability:.1f}%) · "
            f"{analysis.seconds:.2f} s"
        )
        if analysis.path:
            self.recent.remember(analysis.path)
        self.request_grad_cam()

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
        try:
            found = read_mime(mime, origin)
        except NothingToOpen as reason:
            self.show_error(str(reason))
            return False
        if found.path is not None:
            self.open_path(found.path)
        elif found.url is not None:
            self.open_url(found.url)
        else:
            self.open_array(found.pixels, found.name)
        return True

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 (Qt's name)
        if may_hold_an_image(event.mimeData()):
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
        found = neighbour(images, current_path, step)
        if found is None:
            self.status_text.setText("First image of the folder" if step < 0
                                     else "Last image of the folder")
            return
        self.open_path(found)

    def next_image(self) -> None:
        self._neighbour(+1)

    def previous_image(self) -> None:
        self._neighbour(-1)

    def recent_files(self) -> list[str]:
        """Return the files opened last, newest first (File ▸ Open recent)."""
        return self.recent.files()

    # --- weights ------------------------------------------------------------------------------

    def choose_weights(self) -> None:
        dialog = WeightsDialog(self._weights_source, self)
        if dialog.exec() and dialog.source():
            self.load_weights(dialog.source())

    # --- export -------------------------------------------------------------------------------

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

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        # The window goes at once and the settings are on disk; the worker is told to stop but
        # not waited for. Its threads finish the job they are in (possibly seconds inside MLX)
        # and end; they are not daemons, so the process outlives them and never dies inside
        # MLX (see workers.py). main() bounds that wait.
        remember(self, self.settings)
        self.settings.sync()
        self.worker.shutdown()
        super().closeEvent(event)
