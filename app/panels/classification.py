"""The image and what the network makes of it: the input with its crop, and the predictions."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..session import Analysis, WeightsInfo
from ..widgets import Bar, BarChart, ImageView, Panel, caption


class InputPanel(Panel):
    """The image as given and, next to it, the exact square crop the network sees."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Input", parent)
        row = QHBoxLayout()
        self.original = ImageView(
            "Drop an image here,\npaste one (Ctrl+V)\nor open one (Ctrl+O)", minimum=100
        )
        self.crop = ImageView("", minimum=100)
        self.original_caption = caption()
        self.crop_caption = caption()
        for view, label in ((self.original, self.original_caption),
                            (self.crop, self.crop_caption)):
            column = QVBoxLayout()
            column.addWidget(view, 1)
            column.addWidget(label)
            row.addLayout(column, 1)
        self.body.addLayout(row, 1)

    def show_analysis(self, analysis: Analysis, info: WeightsInfo | None) -> None:
        self.original.set_array(analysis.preview)
        # Outline on the original where the network's crop comes from.
        scale = analysis.preview.shape[1] / analysis.original_size[0]
        left, top, right, bottom = (v * scale for v in analysis.crop_region)
        self.original.set_marker(QRectF(left, top, right - left, bottom - top))
        self.crop.set_array(analysis.crop)
        width, height = analysis.original_size
        self.original_caption.setText(f"{analysis.name}\n{width}×{height} px")
        size = analysis.crop.shape[0]
        self.crop_caption.setText(f"what the network sees\n{size}×{size} centre crop")


class PredictionsPanel(Panel):
    """Top-5 bars and a searchable list of every class; choosing one emits ``class_chosen``."""

    class_chosen = Signal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Predictions", parent)
        self.bars = BarChart(row_height=36)
        self.bars.chosen.connect(lambda key: self.class_chosen.emit(int(key)))
        self.aux = QLabel()
        self.aux.setObjectName("caption")
        self.aux.setWordWrap(True)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search all classes…")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.filter)
        self.classes = QListWidget()
        self.classes.setUniformItemSizes(True)
        self.classes.itemActivated.connect(self._item_chosen)
        self.classes.itemClicked.connect(self._item_chosen)
        self.body.addWidget(self.bars)
        self.body.addWidget(self.aux)
        self.body.addWidget(self.search)
        self.body.addWidget(self.classes, 1)
        self._target: int | None = None

    def show_analysis(self, analysis: Analysis, labels: list[str] | None) -> None:
        self.bars.set_bars(
            [
                Bar(entry.index, f"{rank}. {entry.label or f'class {entry.index}'}",
                    entry.probability, f"{100 * entry.probability:.1f}%")
                for rank, entry in enumerate(analysis.top_k, start=1)
            ]
        )
        if analysis.aux_top_k:
            main = {entry.index for entry in analysis.top_k}
            agree = sum(entry.index in main for entry in analysis.aux_top_k)
            first = analysis.aux_top_k[0]
            self.aux.setText(
                f"Aux head (Mixed_6e): {first.label or first.index} "
                f"{100 * first.probability:.1f}% · {agree} of its top 5 in the main top 5"
            )
        else:
            self.aux.setText("Aux head: needs a 299-pixel input" if labels is not None else "")
        self.classes.clear()
        order = np.argsort(-analysis.probabilities, kind="stable")
        for index in order:
            label = labels[index] if labels else f"class {index}"
            item = QListWidgetItem(
                f"{100 * analysis.probabilities[index]:6.2f}%   {label}  (#{index})"
            )
            item.setData(Qt.ItemDataRole.UserRole, int(index))
            self.classes.addItem(item)
        self.filter(self.search.text())

    def filter(self, text: str) -> None:
        needle = text.strip().lower()
        for row in range(self.classes.count()):
            item = self.classes.item(row)
            item.setHidden(bool(needle) and needle not in item.text().lower())

    def set_target(self, index: int | None) -> None:
        self._target = index
        self.bars.set_selected(index)
        for row in range(self.classes.count()):
            item = self.classes.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == index:
                self.classes.blockSignals(True)
                self.classes.setCurrentItem(item)
                self.classes.blockSignals(False)
                break

    def _item_chosen(self, item: QListWidgetItem) -> None:
        self.class_chosen.emit(int(item.data(Qt.ItemDataRole.UserRole)))
