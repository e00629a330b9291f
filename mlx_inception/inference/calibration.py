"""BatchNorm statistics measured on images, for a network that has none (a random one).

torchvision's initialisation leaves every BatchNorm at mean 0 and variance 1, which a random
network's activations are far from: they grow by orders of magnitude layer after layer, and one
class takes all the probability. Measuring the statistics on real images, as training would,
keeps every layer at the scale of a trained network, so a random network's maps show what its
filters pick up and its predictions spread over the classes.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..model import InceptionV3


def calibrate_batchnorm(model: InceptionV3, images: np.ndarray | mx.array) -> None:
    """Set every BatchNorm's running statistics to those of ``images`` (N, H, W, 3), in place.

    One forward pass in training mode with momentum 1 (each running statistic becomes the
    batch's), then the model is left in eval mode. With one image a layer of 1x1 maps (the aux
    head's second convolution) has no variance to measure: pass two or more views of it.
    """
    layers = [module for _, module in model.named_modules() if isinstance(module, nn.BatchNorm)]
    momenta = [layer.momentum for layer in layers]
    try:
        for layer in layers:
            layer.momentum = 1.0
        model.train()
        mx.eval(model(mx.array(images)))
        mx.eval(model.parameters())
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.eval()
