"""Pictures laid over the crop the network sees: one channel enlarged, and Grad-CAM."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QWidget

from mlx_inception.inference.activations import apply_colormap, normalise, overlay

from ..session import GradCamResult, WeightsInfo
from ..widgets import ImageView, Panel, caption, short_name, slider


class ChannelPanel(Panel):
    """One channel enlarged, and laid over the crop with adjustable opacity."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Channel", parent)
        row = QHBoxLayout()
        self.map_view = ImageView("Click a channel in a grid", minimum=100)
        self.map_view.hovered.connect(self._hover)
        self.overlay_view = ImageView("", minimum=100)
        row.addWidget(self.map_view, 1)
        row.addWidget(self.overlay_view, 1)
        self.body.addLayout(row, 1)
        self.caption = caption()
        self.opacity = slider(60)
        self.opacity.setToolTip("Opacity of the channel over the image")
        self.opacity.valueChanged.connect(self._redraw_overlay)
        opacity_row = QHBoxLayout()
        opacity_row.addWidget(QLabel("opacity"))
        opacity_row.addWidget(self.opacity, 1)
        self.body.addWidget(self.caption)
        self.body.addLayout(opacity_row)
        self.key: str | None = None
        self.channel: int | None = None
        self._values: np.ndarray | None = None
        self._raw: np.ndarray | None = None
        self._summary = ""
        self._crop: np.ndarray | None = None
        self._colormap = "viridis"

    def show_channel(self, key: str, channel: int, maps: np.ndarray, crop: np.ndarray,
                     colormap: str) -> None:
        self.key, self.channel = key, channel
        values = maps[:, :, channel]
        self._raw = values
        self._values = normalise({key: values[:, :, None]}, "channel")[key][:, :, 0]
        self._crop, self._colormap = crop, colormap
        self.title.setText(f"Channel {channel} of {short_name(key)}")
        self.map_view.set_array(apply_colormap(self._values, colormap))
        self._summary = (
            f"{key} · channel {channel} of {maps.shape[-1]} · {values.shape[0]}×{values.shape[1]}"
            f" · mean {values.mean():.3g} · max {values.max():.3g}"
        )
        self.caption.setText(self._summary)
        self._redraw_overlay()

    def _hover(self, x: float, y: float) -> None:
        if self._raw is None:
            return
        row, column = int(y), int(x)
        if 0 <= row < self._raw.shape[0] and 0 <= column < self._raw.shape[1]:
            self.caption.setText(f"{self._summary}\ny {row}, x {column} · value "
                                 f"{self._raw[row, column]:.4g}")
        else:
            self.caption.setText(self._summary)

    def clear(self) -> None:
        self.key = self.channel = None
        self._values = self._raw = None
        self.title.setText("Channel")
        self.map_view.set_array(None)
        self.overlay_view.set_array(None)
        self.caption.setText("")

    def _redraw_overlay(self) -> None:
        if self._values is None or self._crop is None:
            return
        self.overlay_view.set_array(
            overlay(self._crop, self._values, self._colormap, self.opacity.value() / 100)
        )


class GradCamPanel(Panel):
    """Grad-CAM of the chosen class at a module or one branch, over the crop."""

    layer_changed = Signal(str)

    WHOLE_MODULE = "whole module"

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Grad-CAM", parent)
        self.view = ImageView("Grad-CAM appears here", minimum=140)
        self.caption = caption()
        self.module = QComboBox()
        self.branch = QComboBox()
        self.module.setToolTip("Module whose activation Grad-CAM weighs")
        self.branch.setToolTip("One branch of the module, or the module's whole output")
        self.opacity = slider(55)
        self.opacity.setToolTip("Opacity of the heatmap over the image")
        self.opacity.valueChanged.connect(self._redraw)
        layer_row = QHBoxLayout()
        layer_row.addWidget(QLabel("at"))
        layer_row.addWidget(self.module, 1)
        layer_row.addWidget(self.branch, 1)
        opacity_row = QHBoxLayout()
        opacity_row.addWidget(QLabel("opacity"))
        opacity_row.addWidget(self.opacity, 1)
        self.body.addWidget(self.view, 1)
        self.body.addWidget(self.caption)
        self.body.addLayout(layer_row)
        self.body.addLayout(opacity_row)
        self.module.currentIndexChanged.connect(self._module_changed)
        self.branch.currentIndexChanged.connect(self._branch_changed)
        self._branches: dict[str, tuple[str, ...]] = {}
        self._result: GradCamResult | None = None
        self._crop: np.ndarray | None = None
        self._updating = False

    def set_network(self, info: WeightsInfo, layer: str) -> None:
        self._updating = True
        self.module.clear()
        self._branches = {}
        for module in info.modules:
            if module.kind == "aux":
                continue
            self._branches[module.name] = module.maps if module.kind == "inception" else ()
            self.module.addItem(module.name)
        self._updating = False
        self.set_layer(layer, notify=False)

    def layer(self) -> str:
        module = self.module.currentText()
        branch = self.branch.currentData()
        return branch or module

    def set_layer(self, layer: str, notify: bool = True) -> None:
        module = layer.split(".")[0]
        self._updating = True
        self.module.setCurrentText(module)
        self._fill_branches(module)
        index = self.branch.findData(layer if "." in layer else None)
        self.branch.setCurrentIndex(max(0, index))
        self._updating = False
        if notify:
            self.layer_changed.emit(self.layer())

    def _fill_branches(self, module: str) -> None:
        self.branch.clear()
        self.branch.addItem(self.WHOLE_MODULE, None)
        for key in self._branches.get(module, ()):
            self.branch.addItem(short_name(key), key)
        self.branch.setEnabled(self.branch.count() > 1)

    def _module_changed(self) -> None:
        if self._updating:
            return
        self._updating = True
        self._fill_branches(self.module.currentText())
        self._updating = False
        self.layer_changed.emit(self.layer())

    def _branch_changed(self) -> None:
        if not self._updating:
            self.layer_changed.emit(self.layer())

    def set_pending(self, text: str) -> None:
        self.caption.setText(text)

    def show_result(self, result: GradCamResult, crop: np.ndarray) -> None:
        self._result, self._crop = result, crop
        grid = "×".join(str(n) for n in result.heatmap.shape)
        self.title.setText(f"Grad-CAM · {result.label}")
        note = "" if result.peak > 0 else " · no positive evidence at this layer"
        self.caption.setText(
            f"class #{result.class_index} at {result.layer} ({grid} grid) · "
            f"{result.seconds:.2f} s{note}"
        )
        self._redraw()

    def clear(self) -> None:
        self._result = None
        self.view.set_array(None)
        self.title.setText("Grad-CAM")
        self.caption.setText("")

    def _redraw(self) -> None:
        if self._result is None or self._crop is None:
            return
        self.view.set_array(
            overlay(self._crop, self._result.heatmap, "turbo", self.opacity.value() / 100)
        )
