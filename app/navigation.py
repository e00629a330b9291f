"""Which image comes next: a folder's images in natural order, and the recent-files menu."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMenu

from mlx_inception.data.images import IMAGE_EXTENSIONS, is_image_file

MAX_RECENT = 10
IMAGE_FILTER = "Images ({});;All files (*)".format(" ".join(f"*{e}" for e in IMAGE_EXTENSIONS))


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


def neighbour(images: list[Path], current: Path, step: int) -> Path | None:
    """Return the image ``step`` places from ``current`` in ``images``, None past either end.

    ``current`` need not be among them (a file deleted since): the step counts from where its
    name would sort.
    """
    names = [p.name for p in images]
    if current.name in names:
        index = names.index(current.name) + step
    else:
        keys = [natural_key(p) for p in images]
        index = sum(k < natural_key(current) for k in keys) + (step if step < 0 else 0)
    return images[index] if 0 <= index < len(images) else None


class RecentFiles:
    """The files opened last, newest first: kept in the settings, listed in ``menu``."""

    def __init__(self, settings: QSettings, menu: QMenu, open_path: Callable[[str], None]):
        self.settings = settings
        self.menu = menu
        self.open_path = open_path
        self._rebuild()

    def files(self) -> list[str]:
        """Return the recent files, newest first."""
        value = self.settings.value("recent/files", [], type=list)
        return [str(v) for v in value or []]

    def remember(self, path: str) -> None:
        recent = [p for p in self.files() if p != path]
        self.settings.setValue("recent/files", [path] + recent[: MAX_RECENT - 1])
        self._rebuild()

    def forget(self, path: str) -> None:
        recent = self.files()
        if path in recent:
            self.settings.setValue("recent/files", [p for p in recent if p != path])
            self._rebuild()

    def _rebuild(self) -> None:
        self.menu.clear()
        recent = self.files()
        for path in recent:
            action = self.menu.addAction(path)
            action.triggered.connect(lambda checked=False, p=path: self.open_path(p))
        self.menu.setEnabled(bool(recent))
