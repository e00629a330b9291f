"""Where the main window opens: as the user left it, always within its screen's free area."""

from __future__ import annotations

from PySide6.QtCore import QMargins, QPoint, QRect, QSettings, QSize, Qt
from PySide6.QtGui import QCursor, QGuiApplication
from PySide6.QtWidgets import QWidget

DEFAULT_SIZE = QSize(1600, 1000)
# What a window manager's frame takes around the window (title bar above, borders elsewhere),
# at most for common desktops: the window's own area is kept inside the free area less this.
FRAME = QMargins(8, 40, 8, 8)
# Platforms that draw into memory: their "screen" is a placeholder (800x600), not a limit.
WINDOWLESS = ("offscreen", "minimal")


def fitted(rect: QRect, available: QRect, frame: QMargins = FRAME) -> QRect:
    """Return ``rect`` shrunk and moved as little as possible to lie within ``available``
    (the screen's free area) with room for the window manager's ``frame`` around it."""
    room = available.marginsRemoved(frame)
    width, height = min(rect.width(), room.width()), min(rect.height(), room.height())
    left = min(max(rect.left(), room.left()), room.left() + room.width() - width)
    top = min(max(rect.top(), room.top()), room.top() + room.height() - height)
    return QRect(left, top, width, height)


def centred(size: QSize, available: QRect) -> QRect:
    """Return a rectangle of ``size`` centred in ``available``."""
    rect = QRect(0, 0, size.width(), size.height())
    rect.moveCenter(available.center())
    return rect


def place(window: QWidget, settings: QSettings, size: QSize | None = None) -> None:
    """Give ``window`` (not yet shown) its geometry: ``size`` if given, else as it was last
    closed, else the default size centred; then fit it into the free area of its screen."""
    saved = settings.value("window/geometry", None)
    restored = size is None and isinstance(saved, QRect) and saved.isValid()
    screen = QGuiApplication.screenAt(saved.center()) if restored else None  # None: it is gone
    screen = screen or QGuiApplication.screenAt(QCursor.pos()) or QGuiApplication.primaryScreen()
    available = screen.availableGeometry() if screen is not None else QRect(QPoint(), DEFAULT_SIZE)
    rect = saved if restored else centred(size or DEFAULT_SIZE, available)
    if QGuiApplication.platformName() not in WINDOWLESS:
        rect = fitted(rect, available)
    window.setGeometry(rect)
    if restored and settings.value("window/maximized", False, type=bool):
        window.setWindowState(window.windowState() | Qt.WindowState.WindowMaximized)


def remember(window: QWidget, settings: QSettings) -> None:
    """Save where ``window`` is and whether it is maximized, for the next start."""
    maximized = window.isMaximized()
    settings.setValue("window/geometry", window.normalGeometry() if maximized
                      else window.geometry())
    settings.setValue("window/maximized", maximized)


def _global_rect(widget: QWidget) -> list[int]:
    corner = widget.mapToGlobal(QPoint(0, 0))
    return [corner.x(), corner.y(), widget.width(), widget.height()]


def _rect(rect: QRect) -> list[int]:
    return [rect.x(), rect.y(), rect.width(), rect.height()]


def layout_report(window: QWidget, panels: dict[str, QWidget]) -> dict:
    """Return where ``window``, each of its ``panels`` and every visible widget of each panel
    lie, as [x, y, width, height] in screen pixels, with the screen's geometry.

    Widgets are named by their order in the panel, class and object name, the same on every
    platform, so a layout on a real screen can be compared with the offscreen one.
    """
    screen = window.screen()
    report = {
        "platform": QGuiApplication.platformName(),
        "screen": _rect(screen.geometry()),
        "available": _rect(screen.availableGeometry()),
        "window": _global_rect(window),
        "frame": _rect(window.frameGeometry()),
        "panels": {},
    }
    for name, panel in panels.items():
        widgets = {
            f"{index}:{type(child).__name__}:{child.objectName()}": _global_rect(child)
            for index, child in enumerate(panel.findChildren(QWidget))
            if child.isVisible() and not child.isWindow()
        }
        report["panels"][name] = {"rect": _global_rect(panel), "widgets": widgets}
    return report
