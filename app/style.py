"""The app's dark look: one Qt style sheet for the window and every panel."""

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
