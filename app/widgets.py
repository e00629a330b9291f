"""Small widgets: a titled frame, a scalable image view, bars, captions, a busy indicator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QPen
from PySide6.QtWidgets import (
    QFrame,
    QLabel,
    QProgressBar,
    QSizePolicy,
    QSlider,
    QStatusBar,
    QVBoxLayout,
    QWidget,
)

ACCENT = QColor("#4c9be8")
TEXT = QColor("#e6e6e6")
TEXT_DIM = QColor("#a0a4ab")
TRACK = QColor("#3a3d43")
HIGHLIGHT = QColor("#ffcc33")


def to_qimage(rgb: np.ndarray) -> QImage:
    """Return a QImage that owns a copy of uint8 RGB (H, W, 3) pixels."""
    rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    height, width = rgb.shape[:2]
    image = QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888)
    return image.copy()  # the numpy buffer may go away; the QImage must not point into it


def qimage_to_array(image: QImage) -> np.ndarray:
    """Return uint8 RGBA (H, W, 4) pixels of a QImage with alpha, else RGB (H, W, 3).

    RGBA is straight (not premultiplied) alpha, what ``load_image`` composites on white like
    a transparent file; dropping alpha instead would show what transparent pixels happen to
    hold (black, for the premultiplied images browsers hand over).
    """
    if image.hasAlphaChannel():
        image, channels = image.convertToFormat(QImage.Format.Format_RGBA8888), 4
    else:
        image, channels = image.convertToFormat(QImage.Format.Format_RGB888), 3
    width, height = image.width(), image.height()
    buffer = np.frombuffer(image.constBits(), dtype=np.uint8, count=image.sizeInBytes())
    rows = buffer.reshape(height, image.bytesPerLine())
    return rows[:, : channels * width].reshape(height, width, channels).copy()


def shape_text(array: np.ndarray) -> str:
    """Return "H×W×C" for an (H, W, C) map (or the length of a vector)."""
    return "×".join(str(n) for n in array.shape)


def short_name(key: str) -> str:
    """Return the part of a tap name after the module ("branch7x7" of "Mixed_6b.branch7x7")."""
    return key.split(".", 1)[1] if "." in key else key


def caption() -> QLabel:
    """Return an empty centred caption label, for the text under a picture."""
    label = QLabel()
    label.setObjectName("caption")
    label.setWordWrap(True)
    label.setAlignment(Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop)
    return label


def slider(value: int) -> QSlider:
    """Return a horizontal 0..100 slider at ``value`` (an opacity in percent)."""
    control = QSlider(Qt.Orientation.Horizontal)
    control.setRange(0, 100)
    control.setValue(value)
    return control


class ElidedLabel(QLabel):
    """One line of text that ends in "…" where it does not fit: a long title never widens its
    panel (and with it the window), and is never cut mid-letter."""

    def __init__(self, text: str = "", parent: QWidget | None = None):
        super().__init__(text, parent)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        rect = self.contentsRect()
        text = self.fontMetrics().elidedText(self.text(), Qt.TextElideMode.ElideRight,
                                             rect.width())
        painter.drawText(rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, text)


class Panel(QFrame):
    """A titled frame; every panel can be saved as a PNG from the window's Export menu."""

    def __init__(self, title: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("panel")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = ElidedLabel(title)  # a class name, a branch: as long as they come
        self.title.setObjectName("panelTitle")
        self.body = QVBoxLayout(self)
        self.body.setContentsMargins(10, 8, 10, 10)
        self.body.setSpacing(6)
        self.body.addWidget(self.title)


class ImageView(QWidget):
    """Shows an RGB array scaled to fit (aspect kept); reports the image pixel under the mouse.

    ``hovered(x, y)`` gives image coordinates (x, y < 0 when the mouse leaves the image) and
    ``clicked(x, y)`` a left click on the image. Small images are enlarged without smoothing so
    every activation cell stays a crisp square.
    """

    hovered = Signal(float, float)
    clicked = Signal(float, float)

    def __init__(self, placeholder: str = "", minimum: int = 120, parent: QWidget | None = None,
                 align_top: bool = False):
        super().__init__(parent)
        self._align_top = align_top
        self._image: QImage | None = None
        # The image smoothly shrunk to the last size drawn: repainting (hover marks, resizes of
        # other widgets) then costs a copy, not another smooth resample of a large grid.
        self._shrunk: tuple[tuple[int, int], QImage] | None = None
        self.array: np.ndarray | None = None  # the pixels shown, as given
        self._placeholder = placeholder
        self.marker: QRectF | None = None
        self._minimum = minimum
        self.setMouseTracking(True)
        self.setMinimumSize(minimum, minimum)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:
        return QSize(self._minimum * 2, self._minimum * 2)

    def set_array(self, rgb: np.ndarray | None) -> None:
        self.array = rgb
        self._image = None if rgb is None else to_qimage(rgb)
        self._shrunk = None
        self.marker = None
        self.update()

    def set_marker(self, rect: QRectF | None) -> None:
        """Outline ``rect`` (image coordinates), e.g. the selected channel's tile."""
        self.marker = rect
        self.update()

    def image_size(self) -> QSize:
        return self._image.size() if self._image is not None else QSize(0, 0)

    def _target(self) -> QRectF:
        if self._image is None:
            return QRectF()
        width, height = self._image.width(), self._image.height()
        scale = min(self.width() / width, self.height() / height)
        w, h = width * scale, height * scale
        top = 0.0 if self._align_top else (self.height() - h) / 2
        return QRectF((self.width() - w) / 2, top, w, h)

    def to_image(self, point: QPointF) -> tuple[float, float] | None:
        """Return the image pixel coordinates under a widget point, or None outside."""
        target = self._target()
        if self._image is None or not target.contains(point):
            return None
        x = (point.x() - target.left()) * self._image.width() / target.width()
        y = (point.y() - target.top()) * self._image.height() / target.height()
        return x, y

    def to_widget(self, x: float, y: float) -> QPointF:
        """Return the widget point that shows image pixel coordinates (x, y)."""
        target = self._target()
        return QPointF(target.left() + x * target.width() / self._image.width(),
                       target.top() + y * target.height() / self._image.height())

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        if self._image is None:
            painter.setPen(TEXT_DIM)
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self._placeholder)
            return
        target = self._target()
        if target.width() >= self._image.width():
            # Enlarged without smoothing: each activation cell stays a crisp square.
            painter.drawImage(target, self._image)
        else:
            size = (round(target.width()), round(target.height()))
            if self._shrunk is None or self._shrunk[0] != size:
                self._shrunk = (size, self._image.scaled(
                    *size, Qt.AspectRatioMode.IgnoreAspectRatio,
                    Qt.TransformationMode.SmoothTransformation))
            painter.drawImage(target.topLeft(), self._shrunk[1])
        if self.marker is not None:
            sx = target.width() / self._image.width()
            sy = target.height() / self._image.height()
            rect = QRectF(target.left() + self.marker.left() * sx,
                          target.top() + self.marker.top() * sy,
                          self.marker.width() * sx, self.marker.height() * sy)
            painter.setPen(QPen(HIGHLIGHT, 2))
            painter.drawRect(rect.adjusted(-1, -1, 1, 1))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        position = self.to_image(event.position())
        self.hovered.emit(*(position if position else (-1.0, -1.0)))

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.hovered.emit(-1.0, -1.0)

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            position = self.to_image(event.position())
            if position is not None:
                self.clicked.emit(*position)


@dataclass
class Bar:
    key: object
    label: str
    value: float  # 0..1, the bar's length
    text: str  # shown at the right
    mark: float | None = None  # 0..1, a tick on the bar (e.g. the share of channels)


class BarChart(QWidget):
    """Horizontal bars with a label above each; a click on a row emits ``chosen(key)``."""

    chosen = Signal(object)

    def __init__(self, row_height: int = 34, parent: QWidget | None = None):
        super().__init__(parent)
        self._bars: list[Bar] = []
        self._selected: object = None
        self._row_height = row_height
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setCursor(Qt.CursorShape.PointingHandCursor)

    def set_bars(self, bars: Sequence[Bar], selected: object = None) -> None:
        self._bars = list(bars)
        self._selected = selected
        self.setFixedHeight(max(1, len(self._bars)) * self._row_height + 4)
        self.update()

    def bars(self) -> list[Bar]:
        return list(self._bars)

    def set_selected(self, key: object) -> None:
        self._selected = key
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        width = self.width()
        font = QFont(self.font())
        metrics_height = painter.fontMetrics().height()
        for row, bar in enumerate(self._bars):
            top = row * self._row_height + 2
            selected = bar.key == self._selected and bar.key is not None
            painter.setFont(font)
            painter.setPen(HIGHLIGHT if selected else TEXT)
            text_rect = QRectF(2, top, width - 4, metrics_height)
            label = painter.fontMetrics().elidedText(bar.label, Qt.TextElideMode.ElideRight,
                                                     int(width * 0.72))
            painter.drawText(text_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                             label)
            painter.setPen(TEXT_DIM)
            painter.drawText(text_rect, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                             bar.text)
            bar_top = top + metrics_height + 2
            bar_height = max(6, self._row_height - metrics_height - 8)
            track = QRectF(2, bar_top, width - 4, bar_height)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(TRACK)
            painter.drawRoundedRect(track, 3, 3)
            filled = QRectF(track.left(), track.top(),
                            track.width() * float(np.clip(bar.value, 0, 1)), bar_height)
            painter.setBrush(HIGHLIGHT if selected else ACCENT)
            painter.drawRoundedRect(filled, 3, 3)
            if bar.mark is not None:
                x = track.left() + track.width() * float(np.clip(bar.mark, 0, 1))
                painter.setPen(QPen(TEXT, 2))
                painter.drawLine(QPointF(x, bar_top - 2), QPointF(x, bar_top + bar_height + 2))

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        row = int(event.position().y() // self._row_height)
        if 0 <= row < len(self._bars) and self._bars[row].key is not None:
            self.chosen.emit(self._bars[row].key)


class Banner(QLabel):
    """What network the window runs, above the panels (orange when it is not a trained one)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Loading the network…", parent)
        self.setObjectName("banner")
        self.setWordWrap(True)

    def describe(self, info) -> None:
        """Say what ``info`` (a ``session.WeightsInfo``, or None: nothing yet) is."""
        if info is None:
            warning, text = True, "No network loaded yet"
        elif info.pretrained:
            warning, text = False, f"Weights: {info.description}"
        else:
            warning, text = True, (
                "No pretrained weights loaded: this is a randomly initialised Inception-v3 "
                "(its BatchNorm statistics measured on the image shown), so its predictions "
                "mean nothing; the maps show what untrained filters respond to. Choose weights "
                "with Weights ▸ Choose weights… (a registry name such as inception_v3.tv_in1k, "
                "a converted folder or a .pth/.safetensors file).")
        self.setProperty("warning", warning)
        self.setText(text)
        self.style().unpolish(self)
        self.style().polish(self)


class BusyIndicator:
    """What the worker is doing, at the right of a status bar: a line of text, and a progress
    bar shown while it works."""

    def __init__(self, status_bar: QStatusBar):
        self.text = QLabel("")
        # Long messages are cut, never allowed to widen the window.
        self.text.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.text.setMinimumWidth(260)
        self.bar = QProgressBar()
        self.bar.setFixedWidth(160)
        self.bar.setTextVisible(False)
        self.bar.hide()
        status_bar.addPermanentWidget(self.text)
        status_bar.addPermanentWidget(self.bar)

    def set_busy(self, busy: bool, description: str = "") -> None:
        """Show the bar, with what is being done, or hide both once the worker is idle."""
        self.bar.setVisible(busy)
        if busy:
            self.bar.setRange(0, 0)
            if description:
                self.text.setText(description + "…")
        else:
            self.text.setText("")

    def show_progress(self, fraction: float, text: str = "") -> None:
        """Fill the bar to ``fraction`` (below 0: unknown, the bar moves) and say ``text``."""
        if fraction < 0:
            self.bar.setRange(0, 0)
        else:
            self.bar.setRange(0, 1000)
            self.bar.setValue(int(1000 * fraction))
        if text:
            self.text.setText(text)
