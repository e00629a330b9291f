"""Inside the network: a navigator of its modules, and the shown module's branches as channel
grids with each branch's share of the module's activation.

The pictures come from ``mlx_inception.inference.activations``; this module only draws them.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from mlx_inception.inference.activations import (
    COLORMAPS,
    NORMALISATIONS,
    SORT_ORDERS,
    ChannelGrid,
    NetworkModule,
    apply_colormap,
    branch_shares,
    channel_order,
    module_maps,
    normalise,
    tile_channels,
)

from ..session import WeightsInfo
from ..widgets import Bar, BarChart, ElidedLabel, ImageView, Panel, shape_text, short_name

GRID_BACKGROUND = (24, 25, 28)
# The widest the navigator asks to be (a 1280-pixel screen leaves the grids about 400 pixels).
NAVIGATOR_MAX_WIDTH = 240


class BranchView(QWidget):
    """One branch's channel grid with its title; reports the channel under the mouse."""

    hovered = Signal(str)
    channel_clicked = Signal(str, int)

    def __init__(self, key: str, parent: QWidget | None = None):
        super().__init__(parent)
        self.key = key
        self.maps: np.ndarray | None = None
        self.grid: ChannelGrid | None = None
        self.selected: int | None = None
        self.title = ElidedLabel(short_name(key))
        self.title.setObjectName("branchTitle")
        self.view = ImageView("", minimum=90, align_top=True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.title)
        layout.addWidget(self.view, 1)
        self.view.hovered.connect(self._hover)
        self.view.clicked.connect(self._click)

    def aspect(self) -> float:
        width, height = self.view.width(), self.view.height()
        return width / height if width > 10 and height > 10 else 1.0

    def display(self, maps: np.ndarray, scaled: np.ndarray, order: np.ndarray,
                colormap: str) -> None:
        self.maps = maps
        self.grid = tile_channels(scaled, order, aspect=self.aspect())
        self.view.set_array(apply_colormap(self.grid.values, colormap, GRID_BACKGROUND))
        self.title.setText(f"{short_name(self.key)}  ·  {shape_text(maps)}")
        self.mark(self.selected)

    def mark(self, channel: int | None) -> None:
        self.selected = channel
        if self.grid is None or channel is None or channel not in set(self.grid.order.tolist()):
            self.view.set_marker(None)
            return
        x, y = self.grid.tile_origin(channel)
        self.view.set_marker(QRectF(x, y, self.grid.tile_width, self.grid.tile_height))

    def _locate(self, x: float, y: float) -> tuple[int, int, int] | None:
        if self.grid is None or x < 0:
            return None
        return self.grid.channel_at(x, y)

    def _hover(self, x: float, y: float) -> None:
        found = self._locate(x, y)
        if found is None or self.maps is None:
            self.hovered.emit("")
            return
        channel, row, column = found
        value = float(self.maps[row, column, channel])
        self.hovered.emit(
            f"{self.key} · channel {channel} · y {row}, x {column} · value {value:.4g}"
        )

    def _click(self, x: float, y: float) -> None:
        found = self._locate(x, y)
        if found is not None:
            self.channel_clicked.emit(self.key, found[0])


class NetworkPanel(Panel):
    """Navigator of the stem, Mixed_5b..Mixed_7c and the aux head, and the selected module's
    branches as channel grids with their share of the module's activation."""

    channel_selected = Signal(str, int)
    gradcam_requested = Signal(str)
    module_changed = Signal(str)
    hover_text = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Inside the network", parent)
        self.modules: dict[str, NetworkModule] = {}
        self.taps: dict[str, np.ndarray] = {}
        self.module: str | None = None
        self.branch: str | None = None
        self.selected: tuple[str, int] | None = None
        self.views: dict[str, BranchView] = {}

        controls = QHBoxLayout()
        self.sort = QComboBox()
        self.sort.addItems([f"sort: {name}" for name in SORT_ORDERS])
        self.sort.setCurrentIndex(SORT_ORDERS.index("mean"))
        self.scale = QComboBox()
        self.scale.addItems([f"normalise per {name}" for name in NORMALISATIONS])
        self.colormap = QComboBox()
        self.colormap.addItems(list(COLORMAPS))
        self.gradcam_here = QPushButton("Grad-CAM here")
        self.gradcam_here.setToolTip("Compute the Grad-CAM at this module or branch")
        for widget in (self.sort, self.scale, self.colormap):
            widget.currentIndexChanged.connect(self.render)
            controls.addWidget(widget)
        controls.addStretch(1)
        controls.addWidget(self.gradcam_here)
        self.gradcam_here.clicked.connect(self._gradcam_here)
        self.body.addLayout(controls)

        splitter = QSplitter(Qt.Orientation.Horizontal)
        self.navigator = QTreeWidget()
        self.navigator.setHeaderLabels(["module", "output"])
        self.navigator.setRootIsDecorated(True)
        self.navigator.currentItemChanged.connect(self._navigated)
        self.navigator.itemExpanded.connect(self._fit_navigator)
        self.navigator.itemCollapsed.connect(self._fit_navigator)
        splitter.addWidget(self.navigator)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(6, 0, 0, 0)
        self.heading = QLabel("Open an image to look inside the network.")
        self.heading.setObjectName("heading")
        self.heading.setWordWrap(True)
        self.shares = BarChart(row_height=30)
        self.shares.chosen.connect(lambda key: self.select(key.split(".")[0], key))
        self.shares_caption = QLabel(
            "bar: share of the module's total activation · tick: share of its channels"
        )
        self.shares_caption.setObjectName("caption")
        self.grid_area = QWidget()
        self.grid_layout = QGridLayout(self.grid_area)
        self.grid_layout.setContentsMargins(0, 0, 0, 0)
        self.grid_layout.setSpacing(8)
        self.hover = QLabel(" ")
        self.hover.setObjectName("caption")
        # Long texts are cut, never allowed to widen the window.
        self.hover.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        right_layout.addWidget(self.heading)
        right_layout.addWidget(self.shares)
        right_layout.addWidget(self.shares_caption)
        right_layout.addWidget(self.grid_area, 1)
        right_layout.addWidget(self.hover)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([190, 700])
        self.body.addWidget(splitter, 1)

        self._resize_timer = QTimer(self)
        self._resize_timer.setSingleShot(True)
        self._resize_timer.setInterval(120)
        self._resize_timer.timeout.connect(self.render)

    # --- state --------------------------------------------------------------------------------

    def set_network(self, info: WeightsInfo) -> None:
        """Fill the navigator with the modules of the loaded network."""
        current = self.module
        self.modules = {module.name: module for module in info.modules}
        self.navigator.blockSignals(True)
        self.navigator.clear()
        stem = QTreeWidgetItem(["Stem", ""])
        stem.setFlags(stem.flags() & ~Qt.ItemFlag.ItemIsSelectable)
        self.navigator.addTopLevelItem(stem)
        for module in info.modules:
            item = QTreeWidgetItem([module.name, ""])
            item.setData(0, Qt.ItemDataRole.UserRole, module.name)
            item.setToolTip(0, f"{module.block}: {module.description}")
            if module.kind == "stem":
                stem.addChild(item)
            else:
                self.navigator.addTopLevelItem(item)
                if module.kind == "inception":
                    for key in module.maps:
                        child = QTreeWidgetItem([short_name(key), ""])
                        child.setData(0, Qt.ItemDataRole.UserRole, key)
                        item.addChild(child)
        self._fit_navigator()
        self.navigator.blockSignals(False)
        self.select(current if current in self.modules else "Mixed_7c")

    def set_taps(self, taps: dict[str, np.ndarray]) -> None:
        self.taps = taps
        items = self._all_items()
        for item in items:
            key = item.data(0, Qt.ItemDataRole.UserRole)
            if not key:
                continue
            if key == "AuxLogits":
                key = "AuxLogits.conv0"
            item.setText(1, shape_text(taps[key]) if key in taps else "")
        self._fit_navigator()
        self.render()

    def select(self, module: str, branch: str | None = None) -> None:
        """Show ``module`` (all its branches) or one ``branch`` of it."""
        if module not in self.modules:
            raise ValueError(
                f"unknown module {module!r}: choose one of {', '.join(self.modules)}"
            )
        item = self._find_item(module, branch)
        if item is not None:
            self.navigator.setCurrentItem(item)  # calls _navigated
        if (self.module, self.branch) != (module, branch):
            self.module, self.branch = module, branch
            self.module_changed.emit(module)
            self.render()

    def _fit_navigator(self) -> None:
        """Keep the navigator as wide as its names and shapes, never cutting a column."""
        tree = self.navigator
        widths = [max(tree.sizeHintForColumn(column), tree.header().sectionSizeHint(column))
                  for column in range(tree.columnCount())]
        for column, width in enumerate(widths[:-1]):
            tree.setColumnWidth(column, width)
        needed = sum(widths) + 2 * tree.frameWidth() + tree.verticalScrollBar().sizeHint().width()
        # Past that, the names of an expanded module's branches scroll: the grids need the room.
        tree.setMinimumWidth(min(needed, NAVIGATOR_MAX_WIDTH))

    def _all_items(self) -> list[QTreeWidgetItem]:
        pending = [self.navigator.topLevelItem(i)
                   for i in range(self.navigator.topLevelItemCount())]
        items = []
        while pending:
            item = pending.pop(0)
            items.append(item)
            pending.extend(item.child(i) for i in range(item.childCount()))
        return items

    def _find_item(self, module: str, branch: str | None) -> QTreeWidgetItem | None:
        for item in self._all_items():
            if item.data(0, Qt.ItemDataRole.UserRole) == (branch or module):
                return item
        return None

    def _navigated(self, item: QTreeWidgetItem | None, _previous: QTreeWidgetItem | None) -> None:
        key = item.data(0, Qt.ItemDataRole.UserRole) if item is not None else None
        if not key:
            return
        module, branch = key.split(".")[0], (key if "." in key else None)
        if (module, branch) != (self.module, self.branch):
            self.module, self.branch = module, branch
            self.module_changed.emit(module)
            self.render()

    def current_layer(self) -> str | None:
        """Return the tap name of what is shown: a branch, or the module."""
        return self.branch or self.module

    def _gradcam_here(self) -> None:
        layer = self.current_layer()
        if layer:
            self.gradcam_requested.emit(layer)

    # --- drawing ------------------------------------------------------------------------------

    def sort_order(self) -> str:
        return SORT_ORDERS[self.sort.currentIndex()]

    def normalisation(self) -> str:
        return NORMALISATIONS[self.scale.currentIndex()]

    def colormap_name(self) -> str:
        return self.colormap.currentText()

    def shown_maps(self) -> dict[str, np.ndarray]:
        """Return the maps of the module shown now (all of its branches), as (H, W, C)."""
        if self.module is None or self.module not in self.modules:
            return {}
        return module_maps(self.taps, self.modules[self.module])

    def render(self) -> None:
        module = self.modules.get(self.module) if self.module else None
        self.gradcam_here.setEnabled(module is not None and module.kind != "aux")
        if module is None:
            return
        self.heading.setText(f"<b>{module.name}</b> · {module.block} — {module.description}")
        maps = self.shown_maps()
        if not maps:
            self._set_views([])
            self.shares.set_bars([])
            self.shares.hide()
            self.shares_caption.hide()
            if self.taps and module.kind == "aux":
                self.hover.setText("The aux head runs on the 17×17 grid of a 299-pixel input.")
            return
        keys = [self.branch] if self.branch in maps else list(maps)
        # "module" normalisation spans every branch even when one is shown, so switching
        # between the module and one of its branches keeps the colours comparable.
        scaled = normalise(maps, self.normalisation())
        shares = branch_shares(maps) if module.kind == "inception" else {}
        if shares:
            self.shares.set_bars(
                [
                    Bar(key, short_name(key), share.activation,
                        f"{100 * share.activation:.0f}% of activation · "
                        f"{100 * share.channels:.0f}% of channels", share.channels)
                    for key, share in shares.items()
                ],
                selected=self.branch,
            )
            self.shares.show()
            self.shares_caption.show()
        else:
            self.shares.hide()
            self.shares_caption.hide()
        self._set_views(keys)
        if self.selected is None or self.selected[0] not in keys:
            # Until a channel is clicked, show the strongest one of the busiest branch.
            key = max(keys, key=lambda k: shares[k].activation) if shares else keys[0]
            self.selected = (key, int(channel_order(maps[key], "mean")[0]))
            self.channel_selected.emit(*self.selected)
        for key in keys:
            view = self.views[key]
            order = channel_order(maps[key], self.sort_order())
            view.selected = self.selected[1] if self.selected[0] == key else None
            view.display(maps[key], scaled[key], order, self.colormap_name())

    def _set_views(self, keys: list[str]) -> None:
        if list(self.views) == keys:
            return
        for view in self.views.values():
            self.grid_layout.removeWidget(view)
            view.deleteLater()
        self.views = {}
        columns = 2 if len(keys) == 4 else max(1, len(keys))
        for position, key in enumerate(keys):
            view = BranchView(key)
            view.hovered.connect(self._hovered)
            view.channel_clicked.connect(self._channel_clicked)
            self.grid_layout.addWidget(view, position // columns, position % columns)
            self.views[key] = view
        for column in range(4):
            self.grid_layout.setColumnStretch(column, 1 if column < columns else 0)
        rows = (len(keys) + columns - 1) // columns
        for row in range(4):
            self.grid_layout.setRowStretch(row, 1 if row < rows else 0)

    def _hovered(self, text: str) -> None:
        self.hover.setText(text or " ")
        self.hover_text.emit(text)

    def _channel_clicked(self, key: str, channel: int) -> None:
        self.selected = (key, channel)
        for view_key, view in self.views.items():
            view.mark(channel if view_key == key else None)
        self.channel_selected.emit(key, channel)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._resize_timer.start()

    def render_pending(self) -> bool:
        """Return whether the grids wait to be drawn again at a new size."""
        return self._resize_timer.isActive()
