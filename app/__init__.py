"""The mlx-inception desktop app (PySide6), installed as the package mlx_inception_app."""
