"""Validation metrics: loss, top-1 and top-5 over a loader's batches, summed over processes."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from ..data.loader import BatchLoader
from ..model import InceptionV3
from .distributed import raise_any_failure, sum_scalars


def validation_metrics(
    model: InceptionV3, loader: BatchLoader, num_classes: int, group: mx.distributed.Group
) -> dict[str, float]:
    """Return ``val_loss``, ``val_top1`` and ``val_top5`` of ``model`` (in evaluation mode) on
    the loader's images; each process scores its share and the counts are summed."""
    k = min(5, num_classes)
    loss_sum = top1 = topk = count = 0.0
    failure = None
    try:
        for images, labels in loader.epoch(0):
            logits = model(mx.array(images))
            y = mx.array(labels)
            best = mx.argpartition(-logits, kth=k - 1, axis=-1)[:, :k]
            hits = best == y[:, None]
            losses = nn.losses.cross_entropy(logits, y, reduction="sum")
            mx.eval(hits, losses)
            loss_sum += losses.item()
            top1 += (mx.argmax(logits, axis=-1) == y).sum().item()
            topk += hits.any(axis=-1).sum().item()
            count += len(labels)
    except Exception as error:  # still join the sum below, so no process waits forever
        failure = error
    raise_any_failure(group, failure, "a validation image")
    loss_sum, top1, topk, count = sum_scalars([loss_sum, top1, topk, count], group)
    return {"val_loss": loss_sum / count, "val_top1": top1 / count, "val_top5": topk / count}
