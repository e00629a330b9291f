"""Data parallelism with ``mx.distributed``: one group, averaged gradients, rank 0 writes.

``mx.distributed.init()`` reads the launcher's environment (the ring backend's ``MLX_RANK`` and
``MLX_HOSTFILE``, or MPI's) and returns a group of size 1 when there is none, so the same
command runs alone or as one process of many. Each process reads its own share of every global
batch (``data.loader.BatchLoader``), computes gradients on it, and ``average_tree`` all-reduces
them; every process then applies the same update to the same weights.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map


def init_group(backend: str = "any") -> mx.distributed.Group:
    """Return the process group the launcher set up (size 1 when run alone)."""
    return mx.distributed.init(strict=False, backend=backend)


def average_tree(tree: Any, group: mx.distributed.Group) -> Any:
    """Return the element-wise mean of ``tree`` over the processes of ``group``.

    Arrays are concatenated into ~32 MiB messages (``mlx.nn.average_gradients``) so Inception's
    ~600 parameter arrays cost a handful of all-reduces, not hundreds.
    """
    if group.size() == 1:
        return tree
    return nn.average_gradients(tree, group=group)


def sum_scalars(values: list[float], group: mx.distributed.Group) -> list[float]:
    """Return the sums of a few Python numbers over all processes (counts, totals)."""
    if group.size() == 1:
        return [float(v) for v in values]
    total = mx.distributed.all_sum(mx.array(values, dtype=mx.float32), group=group)
    return [float(v) for v in total.tolist()]


def same_everywhere(values: list[int], group: mx.distributed.Group) -> bool:
    """Return whether every process holds the same ``values`` (small integers: counts, pieces
    of a digest)."""
    if group.size() == 1:
        return True
    local = mx.array(values, dtype=mx.int32)
    highest = mx.distributed.all_max(local, group=group)
    lowest = mx.distributed.all_min(local, group=group)
    return bool(mx.array_equal(highest, lowest).item())


def broadcast_tree(tree: Any, group: mx.distributed.Group) -> Any:
    """Return rank 0's copy of ``tree`` on every process.

    Seeded initialisation already gives every process the same weights; copying rank 0's makes
    that hold even across machines with different MLX builds.
    """
    if group.size() == 1:
        return tree
    keep = group.rank() == 0
    return tree_map(
        lambda a: mx.distributed.all_sum(a if keep else mx.zeros_like(a), group=group), tree
    )
