"""Weights on disk: PyTorch conversion, the weights directory format, registry and Hub."""
