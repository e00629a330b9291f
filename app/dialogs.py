"""The weights picker: a registry name or Hub repo id, a converted folder, a checkpoint file."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .session import RANDOM_WEIGHTS, registered_weights

CHECKPOINT_FILTER = "Checkpoints (*.safetensors *.pth *.pt *.bin);;All files (*)"


class WeightsDialog(QDialog):
    """Asks for a weights source; ``source()`` is what ``mlx_inception.load`` accepts."""

    def __init__(self, current: str | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Choose weights")
        self.setMinimumWidth(560)
        layout = QVBoxLayout(self)
        intro = QLabel(
            "A registry name or Hugging Face repo id is downloaded once (with progress in the "
            "status bar) and converted into the Hub cache; a folder must hold a converted "
            "model (config.json + model.safetensors); a .pth/.safetensors file is converted "
            "in memory."
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)

        form = QFormLayout()
        self.name = QComboBox()
        self.name.setEditable(True)
        for name, description in registered_weights():
            self.name.addItem(name)
            self.name.setItemData(self.name.count() - 1, description,
                                  Qt.ItemDataRole.ToolTipRole)
        self.name.setCurrentText(current or "")
        self.name.lineEdit().setPlaceholderText("registry name or owner/repo")
        use_name = QPushButton("Use")
        use_name.clicked.connect(lambda: self._choose(self.name.currentText().strip()))
        row = QHBoxLayout()
        row.addWidget(self.name, 1)
        row.addWidget(use_name)
        form.addRow("Registry / Hub:", row)

        folder = QPushButton("Choose a converted folder…")
        folder.clicked.connect(self._choose_folder)
        checkpoint = QPushButton("Choose a .pth / .safetensors file…")
        checkpoint.clicked.connect(self._choose_file)
        random = QPushButton("No weights: random initialisation")
        random.clicked.connect(lambda: self._choose(RANDOM_WEIGHTS))
        form.addRow("Local:", folder)
        form.addRow("", checkpoint)
        form.addRow("", random)
        layout.addLayout(form)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self._source: str | None = None

    def source(self) -> str | None:
        return self._source

    def _choose(self, source: str) -> None:
        if source:
            self._source = source
            self.accept()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Converted weights folder")
        if folder:
            self._choose(folder)

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "PyTorch checkpoint", "", CHECKPOINT_FILTER)
        if path:
            self._choose(path)
