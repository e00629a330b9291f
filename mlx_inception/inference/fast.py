"""The network that prediction, evaluation and feature extraction run: the fast inference path.

:func:`mlx_inception.model.fuse.optimize_for_inference` rewrites a model *in place* (BatchNorm
folded into the convolutions, parallel 1x1 convolutions fused, the plain call on two CPU
streams or ``mx.compile``-d on a GPU). A rewritten model can no longer be trained, its
layers are no longer the paper's (nor its parameter names torchvision's), so code that was
handed a model must not rewrite it behind its caller's back. :func:`fast_model` therefore
rewrites a *copy of the module tree* by default: new module objects over the same arrays, so
the copy costs nothing until folding replaces its weights (which it would have to create
anyway), and the caller's model keeps its BatchNorms, its mode and its parameters.

Gradients (Grad-CAM, training) and anything that reads torchvision's parameter names or the
block classes (the app's network view, saving weights) use the plain model.
"""

from __future__ import annotations

import mlx.nn as nn

from ..model import InceptionV3
from ..model.fuse import FastInceptionV3, optimize_for_inference


def is_fast(model: nn.Module) -> bool:
    """Return whether ``model`` is already on the fast inference path."""
    return isinstance(model, FastInceptionV3)


def _copy_tree(value):
    """Return ``value`` with every module, list, tuple and dict in it copied; arrays shared."""
    if isinstance(value, nn.Module):
        copy = value.__class__.__new__(value.__class__)
        copy.__dict__.update(value.__dict__)
        # Freezing edits this set in place; the copy gets its own.
        copy.__dict__["_no_grad"] = set(value.__dict__.get("_no_grad", ()))
        for key, item in dict.items(value):
            dict.__setitem__(copy, key, _copy_tree(item))
        return copy
    if isinstance(value, dict):
        return {key: _copy_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_tree(item) for item in value)
    return value  # arrays, numbers, configs: shared, never edited by the rewrite


def module_tree_copy(model: InceptionV3) -> InceptionV3:
    """Return a new model of the same class over the same arrays (no array is copied).

    Rewriting the copy's modules (folding, fusion, ``eval()``) leaves ``model`` as it was;
    assigning new arrays to one does not change the other.
    """
    return _copy_tree(model)


def fast_model(model: InceptionV3, copy: bool = True) -> InceptionV3:
    """Return ``model`` on the fast inference path (:func:`optimize_for_inference`), in eval mode.

    ``copy=True`` (default): the rewrite happens on :func:`module_tree_copy`, so ``model`` is
    left as it was (its folded weights are new arrays beside the caller's: about one more set
    of weights in float32, fewer in half precision, where ``mlx_inception.load`` has already
    folded the BatchNorms and only the fused 1x1 weights are new). ``copy=False``: ``model``
    itself is rewritten, for a model nobody else holds. A model already on the fast path is
    returned as it is.
    """
    if is_fast(model):
        return model
    return optimize_for_inference(module_tree_copy(model) if copy else model)


__all__ = ["fast_model", "is_fast", "module_tree_copy"]
