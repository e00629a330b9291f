"""The mlx-inception desktop app (PySide6), installed as the package mlx_inception_app."""

from . import qt_compat  # noqa: F401  (before any widget: see qt_compat)
