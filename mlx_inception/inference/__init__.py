"""Prediction, multi-crop evaluation and Grad-CAM on a loaded model."""
