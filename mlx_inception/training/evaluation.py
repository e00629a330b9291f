"""Validation metrics (loss, top-1, top-5 summed over processes), the BatchNorm statistics they
are computed with (precise BN), and checks on the statistics of initial weights."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ..data.loader import BatchLoader
from ..model import InceptionV3
from .distributed import raise_any_failure, sum_scalars
from .network import is_decayed, is_statistic, set_training_mode


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


def recompute_batchnorm_statistics(
    model: InceptionV3, loader: BatchLoader, group: mx.distributed.Group
) -> None:
    """Set the running statistics of every BatchNorm in training mode to the mean of its batch
    statistics over the loader's batches: "precise BN" (Wu & Johnson 2021, section 3).

    The statistics then describe the weights being evaluated, whatever the momentum or the age
    of the running averages. Modules in evaluation mode (frozen ones) keep theirs; dropout is
    left out. Each batch's statistics are gathered from every process in the global batches'
    order before the mean, so N processes compute exactly what one process with N micro-batches
    does.
    """
    layers = [module for _, module in model.named_modules()
              if isinstance(module, nn.BatchNorm) and module.training]
    if not layers:  # every BatchNorm frozen (a new head on a frozen backbone): nothing to do
        return
    momenta = [layer.momentum for layer in layers]
    rows, failure = [], None
    try:
        for layer in layers:  # the running statistics become each batch's own
            layer.momentum = 1.0
        for images, _ in loader.epoch(0):
            model(mx.array(images))
            rows.append(mx.concatenate([statistic for layer in layers for statistic in
                                        (layer.running_mean, layer.running_var)]))
            mx.eval(rows[-1])
    except Exception as error:  # still join the gather below, so no process waits forever
        failure = error
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    raise_any_failure(group, failure, "a training image (recomputing BatchNorm statistics)")
    if not rows:
        return
    table = mx.stack(rows)  # (batches, statistics)
    if group.size() > 1:  # rank-major -> the order of the shares in the global batches
        gathered = mx.distributed.all_gather(table, group=group)
        table = gathered.reshape(group.size(), len(rows), -1).transpose(1, 0, 2)
    mean, offset = mx.mean(table.reshape(-1, table.shape[-1]), axis=0), 0
    for layer in layers:
        size = layer.running_mean.shape[0]
        layer.running_mean = mean[offset:offset + size]
        layer.running_var = mean[offset + size:offset + 2 * size]
        offset += 2 * size
    mx.eval([(layer.running_mean, layer.running_var) for layer in layers])


def precise_statistics(
    model: InceptionV3, frozen: list[str], loader: BatchLoader, group: mx.distributed.Group
) -> dict[str, mx.array]:
    """Return the BatchNorm statistics of ``model``'s weights recomputed over the loader's
    images (frozen modules keep theirs: they normalise with them in training too)."""
    set_training_mode(model, frozen)
    model.dropout.eval()
    try:
        recompute_batchnorm_statistics(model, loader, group)
    finally:
        model.eval()
    return {k: v for k, v in tree_flatten(model.parameters()) if is_statistic(k)}


def weight_decay_penalty(weights: dict[str, mx.array], weight_decay: float) -> float:
    """Return TF-slim's L2 penalty (wd / 2) * |w|^2 over the decayed weights: it enters the
    gradient (``step``), never the reported classification losses."""
    squares = [mx.sum(mx.square(v)) for k, v in weights.items() if is_decayed(k)]
    return 0.5 * weight_decay * sum(squares).item() if squares else 0.0


def initial_statistics_warning(model: InceptionV3, loader: BatchLoader) -> str | None:
    """Return a one-line warning when ``model``'s running BatchNorm statistics do not fit the
    loader's first batch: its logits with them are over ten times as large as with the batch's
    own (a random or briefly trained network's statistics, a very different kind of image)."""
    batches = loader.epoch(0)
    try:
        batch = next(batches, None)
    finally:
        batches.close()  # stops the decoding queued ahead
    if batch is None:
        return None
    probe = InceptionV3(model.config, init_weights=False)
    probe.update(model.parameters())
    scales = []
    for training in (False, True):
        probe.train(training)
        probe.dropout.eval()  # no draw from the global random state
        output = probe(mx.array(batch[0]))
        logits = output[0] if isinstance(output, tuple) else output
        scales.append(mx.mean(mx.abs(logits.astype(mx.float32))).item())
    with_running, with_batch = scales
    if with_running <= 10 * with_batch + 1:  # written so that NaN and inf warn too
        return None
    return (f"the --init weights' BatchNorm statistics do not fit these images (mean |logit| "
            f"{with_running:.3g} with them, {with_batch:.3g} with each batch's own): a frozen "
            "backbone normalises with them; use --freeze none or weights made for such images")
