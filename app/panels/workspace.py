"""The window's panels in three columns, and what links them to each other."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSplitter, QWidget

from ..session import Analysis, WeightsInfo
from .classification import InputPanel, PredictionsPanel
from .network import NetworkPanel
from .overlays import ChannelPanel, GradCamPanel


class Workspace(QSplitter):
    """Input and predictions, the network, and Grad-CAM over the channel, left to right.

    The channel panel follows the channel chosen in the network panel, in its colour map.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(Qt.Orientation.Horizontal, parent)
        self.input_panel = InputPanel()
        self.predictions_panel = PredictionsPanel()
        self.network_panel = NetworkPanel()
        self.channel_panel = ChannelPanel()
        self.gradcam_panel = GradCamPanel()
        self.panels = {
            "input": self.input_panel,
            "predictions": self.predictions_panel,
            "network": self.network_panel,
            "channel": self.channel_panel,
            "gradcam": self.gradcam_panel,
        }
        self.analysis: Analysis | None = None
        self._laid_out = False

        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(self.input_panel)
        left.addWidget(self.predictions_panel)
        left.setSizes([330, 600])
        right = QSplitter(Qt.Orientation.Vertical)
        right.addWidget(self.gradcam_panel)
        right.addWidget(self.channel_panel)
        right.setSizes([520, 420])
        self.addWidget(left)
        self.addWidget(self.network_panel)
        self.addWidget(right)
        self.setStretchFactor(1, 1)

        self.network_panel.channel_selected.connect(self.show_channel)
        self.network_panel.colormap.currentIndexChanged.connect(self._recolour_channel)

    def show_analysis(self, analysis: Analysis, info: WeightsInfo | None) -> None:
        """Draw a new image's analysis in every panel; its Grad-CAM comes later."""
        self.analysis = analysis
        self.input_panel.show_analysis(analysis, info)
        self.predictions_panel.show_analysis(analysis, info.labels if info else None)
        self.network_panel.set_taps(analysis.taps)
        self.channel_panel.clear()
        self.gradcam_panel.clear()
        selected = self.network_panel.selected
        if selected and selected[0] in analysis.taps:
            self.show_channel(*selected)

    def show_channel(self, key: str, channel: int) -> None:
        """Enlarge ``channel`` of the map ``key`` in the channel panel."""
        if self.analysis is None or key not in self.analysis.taps:
            return
        self.channel_panel.show_channel(key, channel, self.analysis.taps[key], self.analysis.crop,
                                        self.network_panel.colormap_name())

    def _recolour_channel(self) -> None:
        if self.channel_panel.key is not None:
            self.show_channel(self.channel_panel.key, self.channel_panel.channel)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        if not self._laid_out:
            # A quarter, a half and a quarter of the width the window opens with.
            self._laid_out = True
            width = self.width()
            self.setSizes([width // 4, width - 2 * (width // 4), width // 4])
