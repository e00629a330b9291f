"""The network that prediction, evaluation and feature extraction run: the fast inference path.

:func:`optimize_for_inference` rewrites a model *in place* (BatchNorm folded, parallel 1x1
convolutions fused, the plain call ``mx.compile``-d on a GPU). A rewritten model can no longer be
trained and its parameter names are no longer torchvision's, so code that was handed a model
must not rewrite it behind its caller's back: :func:`fast_model` rewrites a *copy of the module
tree* by default (new module objects over the same arrays), and the caller's model keeps its
BatchNorms, its mode and its parameters.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..model import InceptionV3
from ..model.inception_v3 import MIXED
from .fuse import fold_batchnorm, fuse_parallel_convolutions


class FastInceptionV3(InceptionV3):
    """An InceptionV3 (folded and fused) whose plain call takes the device's fastest path.

    On a GPU: one ``mx.compile``-d graph per input shape, with the model's arrays as its
    declared inputs, so later changes to them (``set_dtype``, ``update``) are seen. On the CPU:
    the eager network (compiling convolution + bias + ReLU does not pay there).
    ``features`` takes the same path; ``forward_with_taps`` runs eagerly.
    """

    def __call__(self, x: mx.array) -> mx.array | tuple[mx.array, mx.array]:
        if self.training or not self._compiles():
            return InceptionV3.__call__(self, x)
        return self._compiled(x, "fc")

    def features(self, x: mx.array, layer: str = "avgpool") -> mx.array:
        """Return the activation of ``layer`` (see :meth:`InceptionV3.features`), on the same
        path as the plain call."""
        if not self._compiles() or layer not in (*self._stem_names(), *MIXED, "avgpool"):
            return InceptionV3.features(self, x, layer)  # its error names the choices
        return self._compiled(x, layer)

    def compiled_forward(self, x: mx.array) -> mx.array | tuple[mx.array, mx.array]:
        """Return the plain call's output from the ``mx.compile``-d graph (any device)."""
        return self._compiled(x, "fc")

    def compiled_features(self, x: mx.array, layer: str = "avgpool") -> mx.array:
        """Return ``features(x, layer)`` from an ``mx.compile``-d graph, one per layer."""
        return self._compiled(x, layer)

    def _compiles(self) -> bool:
        return self.__dict__.get("_compile", True) and (
            mx.default_device().type == mx.DeviceType.gpu
        )

    def _compiled(self, x: mx.array, stop_at: str) -> mx.array:
        graphs = self.__dict__.setdefault("_compiled_graphs", {})  # one per stop_at
        if stop_at not in graphs:
            graphs[stop_at] = mx.compile(
                lambda images: self._run(images, stop_at=stop_at, with_aux=False)[0],
                inputs=self.state,
            )
        return graphs[stop_at](x)




def optimize_for_inference(model: InceptionV3, compile: bool = True) -> FastInceptionV3:
    """Return ``model`` rewritten for fast inference: BatchNorm folded, 1x1s fused, its plain
    call compiled on a GPU (``compile``). Works in place and leaves the model in eval mode;
    it gives the plain model's outputs (to float32 rounding) and ``forward_with_taps`` keys."""
    fold_batchnorm(model)
    fuse_parallel_convolutions(model)
    model.__class__ = FastInceptionV3
    object.__setattr__(model, "_compile", compile)
    return model


def is_fast(model: nn.Module) -> bool:
    """Return whether ``model`` is already on the fast inference path."""
    return isinstance(model, FastInceptionV3)


# State that belongs to one model object and must not follow it into a copy: the compiled
# graphs close over the original, the pending product is one call's.
_NOT_COPIED = ("_compiled_graphs", "_pending")


def _copy_tree(value, memo: dict[int, nn.Module]):
    """Return ``value`` with every module, list, tuple and dict in it copied; arrays shared.

    A module reached twice (a fused block's ``pointwise``, also held by its branches) is copied
    once, and the copies refer to each other as the originals did.
    """
    if isinstance(value, nn.Module):
        if id(value) in memo:
            return memo[id(value)]
        copy = value.__class__.__new__(value.__class__)
        memo[id(value)] = copy
        for key, item in value.__dict__.items():
            if key not in _NOT_COPIED:
                copy.__dict__[key] = _copy_tree(item, memo) if isinstance(item, nn.Module) else item
        # Freezing edits this set in place; the copy gets its own.
        copy.__dict__["_no_grad"] = set(value.__dict__.get("_no_grad", ()))
        for key, item in dict.items(value):
            dict.__setitem__(copy, key, _copy_tree(item, memo))
        return copy
    if isinstance(value, dict):
        return {key: _copy_tree(item, memo) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy_tree(item, memo) for item in value)
    return value  # arrays, numbers, configs: shared, never edited by the rewrite


def module_tree_copy(model: InceptionV3) -> InceptionV3:
    """Return a new model of the same class over the same arrays (no array is copied).

    Rewriting the copy's modules (folding, fusion, ``eval()``) leaves ``model`` as it was;
    assigning new arrays to one does not change the other.
    """
    return _copy_tree(model, {})


def fast_model(model: InceptionV3, copy: bool = True) -> InceptionV3:
    """Return ``model`` on the fast inference path (:func:`optimize_for_inference`), in eval mode.

    ``copy=True`` (default): the rewrite happens on :func:`module_tree_copy`, so ``model`` is
    left as it was. ``copy=False``: ``model`` itself is rewritten, for a model nobody else
    holds. A model already on the fast path is returned as it is.
    """
    if is_fast(model):
        return model
    return optimize_for_inference(module_tree_copy(model) if copy else model)
