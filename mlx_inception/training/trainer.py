"""The training loop: a compiled step, a moving average of the weights, evaluation, checkpoints.

One optimizer step, as ``Trainer._train_step`` writes it (compiled with ``mx.compile``; the
model's, the optimizer's, the moving average's and MLX's random state are its inputs and
outputs):

1. for each micro-batch: forward in training mode (BatchNorm uses the batch's statistics,
   dropout is on), loss = smoothed cross-entropy + 0.4 x the aux head's, gradients;
2. average gradients over micro-batches and processes (``mx.distributed``);
3. add weight decay, clip by global norm, apply TF's RMSProp;
4. update the moving average of the weights (and of the BatchNorm statistics, as
   ``inception_distributed_train.py`` does), which evaluation uses.

The loop around it feeds batches decoded in background threads, shows progress, evaluates on
the validation set after every epoch (evaluation mode, averaged weights), saves ``last`` (and
``best``) checkpoints, then rewrites ``metrics.jsonl`` and ``curves.png`` from the records the
checkpoint holds.
``Trainer.resume`` restores all of it, so a resumed run continues bit for bit.

Randomness is counter-based: the data order and each image's augmentation come from
(seed, epoch, position) (see ``data.loader``) and the dropout key of step ``n``'s share ``s``
of the global batch from (seed, n, s). A checkpoint therefore needs only the seed and the step
to restore every random stream, whatever the number of decoding threads or how far ahead they
ran; and a data-parallel run draws the same masks as one process holding the whole batch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from .. import kernels
from ..atomic import write_text_atomically
from ..checkpoints.store import model_weights, read_config
from ..data.augment import training_input
from ..data.folder import ImageFolder
from ..data.images import load_image
from ..data.loader import BatchLoader, split_samples
from ..data.transforms import preprocess
from ..errors import CheckpointError, DataError, ImageError, InceptionError
from ..model import InceptionV3, InceptionV3Config
from ..progress import ProgressBar, format_duration
from . import checkpoint as checkpoints
from .curves import draw_curves
from .distributed import (
    average_tree,
    broadcast_tree,
    init_group,
    same_everywhere,
    sum_scalars,
)
from .history import metrics_text, read_metrics, write_metrics
from .network import (
    build_network,
    freeze,
    frozen_modules,
    is_decayed,
    is_statistic,
    set_training_mode,
)
from .optim import TFRMSProp, clip_by_global_norm, constant, global_norm, staircase_decay
from .recipe import ConfigError, TrainConfig, absolute_paths, check

CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"
# Settings a resumed run may change: they do not alter what is computed.
RESUMABLE_OVERRIDES = ("epochs", "max_steps", "workers", "prefetch", "compile")
# A checkpoint at least this often (TF-slim's save_interval_secs=600), besides epoch ends.
SAVE_INTERVAL_SECONDS = 600.0


def smoothed_cross_entropy(logits: mx.array, labels: mx.array, smoothing: float) -> mx.array:
    """Return the mean cross-entropy against (1 - eps) * one_hot + eps / K (paper, section 7)."""
    return nn.losses.cross_entropy(
        logits.astype(mx.float32), labels, label_smoothing=smoothing, reduction="mean"
    )


class _Key:
    """Holds the key of the next dropout draw (a plain attribute, so not a model parameter)."""

    value: mx.array | None = None


class KeyedDropout(nn.Dropout):
    """``nn.Dropout`` that draws its mask from a key set before each forward pass.

    The masks are then a function of (seed, step, share of the batch) instead of a global
    random state, which makes micro-batches on one process and shares on several processes
    draw identical masks.
    """

    def __init__(self, p: float):
        super().__init__(p)
        self.next_key = _Key()

    def __call__(self, x: mx.array) -> mx.array:
        if not self.training or self._p_1 == 1 or self.next_key.value is None:
            return super().__call__(x)
        keep = mx.random.bernoulli(self._p_1, x.shape, key=self.next_key.value)
        return (keep * x) * (1 / self._p_1)


def ema_decay_at(decay: float, updates: mx.array) -> mx.array:
    """Return TF's ``ExponentialMovingAverage`` decay with ``num_updates``:
    min(decay, (1 + n) / (10 + n)), so early averages are not dominated by the initial weights."""
    n = updates.astype(mx.float32)
    return mx.minimum(mx.array(decay, mx.float32), (1.0 + n) / (10.0 + n))


@dataclass
class EpochTotals:
    """Running sums over the steps of the epoch in progress (saved in checkpoints)."""

    loss: float = 0.0
    correct: float = 0.0
    images: int = 0
    timed_images: int = 0  # images of the steps whose time is counted (not the compiling one)
    steps: int = 0
    seconds: float = 0.0
    wait_seconds: float = 0.0
    ready_steps: int = 0  # steps whose batch was decoded before the step asked for it

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


@dataclass
class Progress:
    """Where the run stands: what a checkpoint must restore besides arrays."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # steps of the current epoch completed
    step: int = 0  # optimizer steps completed in total
    best_val_top1: float | None = None
    best_epoch: int | None = None
    totals: EpochTotals = field(default_factory=EpochTotals)


class Trainer:
    """Trains Inception-v3 as ``config`` says; ``fit()`` runs it, ``Trainer.resume`` continues."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        notes: list[str] | None = None,
        group: mx.distributed.Group | None = None,
        show_progress: bool = True,
        log: Callable[[str], None] | None = None,
        _resume_from: InceptionV3Config | None = None,
    ):
        self.group = group if group is not None else init_group()
        self.rank, self.world_size = self.group.rank(), self.group.size()
        self.is_main = self.rank == 0
        check(config, self.world_size)
        self.config = config
        self.run_dir = Path(config.out)
        self.show_progress = show_progress and self.is_main
        self._log = log or (lambda message: print(message, file=sys.stderr))
        self.notes = list(notes or [])
        if _resume_from is None:
            self._on_main(self._refuse_existing_run)

        self._load_data()
        if _resume_from is not None and list(_resume_from.labels or []) != self.classes:
            raise DataError(
                f"{config.data}: the class folders changed since the run began "
                f"({len(self.classes)} now, {len(_resume_from.labels or [])} then); resume "
                "needs the same classes"
            )
        # The network's variant is settled here (from the --init weights when they give it).
        self.model, self.config, built = build_network(config, self.classes, _resume_from)
        config = self.config
        self.notes += built
        self.model.dropout = KeyedDropout(self.model.config.dropout)
        self.frozen = frozen_modules(config.freeze)
        freeze(self.model, self.frozen)
        if not tree_flatten(self.model.trainable_parameters()):
            raise ConfigError("--freeze leaves nothing to train")
        if self.world_size > 1:
            self.model.update(broadcast_tree(self.model.parameters(), self.group))
            # Evaluate now: left lazy, these all-reduces would join the first step's graph,
            # where processes could run collectives in different orders.
            mx.eval(self.model.parameters())
        self.compute_dtype = mx.bfloat16 if config.dtype == "bfloat16" else mx.float32

        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{config.data}: {len(self.train_samples)} training images are fewer than one "
                f"batch of {config.batch_size}; lower --batch-size"
            )
        self.optimizer = TFRMSProp(
            self._schedule(), config.rmsprop_decay, config.rmsprop_momentum,
            config.rmsprop_epsilon,
        )
        self.optimizer.init(self.model.trainable_parameters())
        # The moving average covers what training changes: trainable weights and statistics.
        self.ema: dict[str, mx.array] = {}
        if config.ema_decay > 0:
            self.ema.update(self._averaged_part(model_weights(self.model)))
        self.progress = Progress()
        self.metrics: list[dict[str, Any]] = []
        self._stop_requested = False
        self._eval_model: InceptionV3 | None = None
        self._last_save = time.monotonic()
        self.compile_seconds: float | None = None

    # --- set-up ---------------------------------------------------------------------------------

    def _refuse_existing_run(self) -> None:
        # A folder with a configuration but no checkpoint (a run stopped before its first
        # save) has nothing to resume or lose, so it may be started again.
        if (self.run_dir / "last").exists() or (self.run_dir / "best").exists():
            raise ConfigError(
                f"{self.run_dir} already holds a run; continue it with --resume {self.run_dir} "
                "or choose another --out"
            )

    def _load_data(self) -> None:
        config = self.config
        folder = ImageFolder(config.data)
        self.classes = list(folder.classes)
        self.train_samples = list(folder.samples)
        self.val_samples: list = []
        if config.val:
            validation = ImageFolder(config.val, folder.class_to_index, min_classes=1)
            self.val_samples = list(validation.samples)
        elif config.val_split > 0:
            self.train_samples, self.val_samples = split_samples(
                self.train_samples, config.val_split, config.seed, root=config.data
            )
        per_process = config.batch_size // self.world_size
        self.micro_batch = per_process // config.micro_batches
        self.train_loader = BatchLoader(
            self.train_samples, self._load_training_sample, config.batch_size,
            shuffle=True, drop_last=True, seed=config.seed, rank=self.rank,
            world_size=self.world_size, workers=config.workers, prefetch=config.prefetch,
        )
        self.val_loader = BatchLoader(
            self.val_samples, self._load_evaluation_sample,
            max(per_process, 2) * self.world_size, shuffle=False, drop_last=False,
            rank=self.rank, world_size=self.world_size, workers=config.workers,
            prefetch=config.prefetch,
        )

    def _load_training_sample(self, path: Path, label: int, seed: tuple[int, ...]) -> np.ndarray:
        config = self.config
        rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
        return training_input(
            load_image(path), config.image_size, rng, self.model.config.preprocessing,
            tuple(config.crop_scale), tuple(config.crop_ratio), config.flip,
        )

    def _load_evaluation_sample(self, path: Path, label: int, seed: tuple[int, ...]) -> np.ndarray:
        return preprocess(load_image(path), self.model.config.preprocessing)

    def _schedule(self):
        config = self.config
        if config.lr_decay_epochs > 0:
            decay_steps = max(1, int(self.steps_per_epoch * config.lr_decay_epochs))
            return staircase_decay(config.learning_rate, config.lr_decay_rate, decay_steps)
        return constant(config.learning_rate)

    def _averaged_part(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        trainable = {k for k, _ in tree_flatten(self.model.trainable_parameters())}
        return {k: v for k, v in weights.items() if k in trainable or is_statistic(k)}

    # --- the step ---------------------------------------------------------------------------------

    def _state(self) -> list:
        return [self.model.state, self.optimizer.state, mx.random.state, self.ema]

    def _build_step(self) -> Callable:
        if not self.config.compile:
            return self._train_step
        state = self._state()
        return mx.compile(self._train_step, inputs=state, outputs=state)

    def _train_step(self, images: mx.array, labels: mx.array, keys: mx.array):
        """One optimizer step on (micro_batches, b, H, W, 3) images, a dropout key per
        micro-batch; returns the loss, the number of correct predictions and the gradient norm."""
        config, model = self.config, self.model
        masters = dict(tree_flatten(model.parameters()))  # float32 weights + statistics
        trainable = model.trainable_parameters()

        def loss_fn(params, x, y):
            # Each micro-batch starts from the step's statistics, as each replica would; in
            # bfloat16 the weights are cast for the forward pass, their gradients flow back
            # to the float32 masters through the cast.
            weights = {**masters, **dict(tree_flatten(params))}
            if self.compute_dtype != mx.float32:
                weights = {
                    k: v if is_statistic(k) else v.astype(self.compute_dtype)
                    for k, v in weights.items()
                }
                x = x.astype(self.compute_dtype)
            model.update(tree_unflatten(list(weights.items())))
            output = model(x)
            logits, aux = output if isinstance(output, tuple) else (output, None)
            loss = smoothed_cross_entropy(logits, y, config.label_smoothing)
            if aux is not None:
                loss = loss + config.aux_weight * smoothed_cross_entropy(
                    aux, y, config.label_smoothing
                )
            return loss, logits

        loss_and_grad = mx.value_and_grad(loss_fn)
        total_loss, correct, grads, statistics = 0.0, 0, None, None
        for i in range(images.shape[0]):
            model.dropout.next_key.value = keys[i]
            (loss, logits), g = loss_and_grad(trainable, images[i], labels[i])
            stats = {k: v for k, v in tree_flatten(model.parameters()) if is_statistic(k)}
            total_loss = total_loss + loss
            correct = correct + mx.sum(mx.argmax(logits, axis=-1) == labels[i])
            grads = g if grads is None else _tree_add(grads, g)
            statistics = stats if statistics is None else _tree_add(statistics, stats)
        count = images.shape[0]
        if count > 1:
            grads = _tree_scale(grads, 1.0 / count)
            statistics = _tree_scale(statistics, 1.0 / count)
        loss = total_loss / count
        if self.world_size > 1:
            grads = average_tree(grads, self.group)
            statistics = dict(tree_flatten(
                average_tree(tree_unflatten(list(statistics.items())), self.group)
            ))
            loss = mx.distributed.all_sum(loss, group=self.group) / self.world_size
            correct = mx.distributed.all_sum(correct, group=self.group)

        flat_grads = dict(tree_flatten(grads))
        if config.weight_decay > 0:
            # d/dw of (wd / 2) * |w|^2, TF's l2_regularizer, added before clipping as the
            # regularisation loss is part of TF-slim's total loss.
            for key, gradient in flat_grads.items():
                if is_decayed(key):
                    flat_grads[key] = gradient + config.weight_decay * masters[key]
        grads = tree_unflatten(list(flat_grads.items()))
        if config.clip_norm > 0:
            grads, norm = clip_by_global_norm(grads, config.clip_norm)
        else:  # still measured: an inf or NaN gradient must stop the run before any save
            norm = global_norm(grads)
        updates = self.optimizer.apply_gradients(grads, tree_unflatten(
            [(k, masters[k]) for k in flat_grads]
        ))
        masters.update(tree_flatten(updates))
        masters.update(statistics)
        model.update(tree_unflatten(list(masters.items())))

        if self.ema:
            decay = ema_decay_at(config.ema_decay, self.optimizer.step - 1)
            for key, average in self.ema.items():
                # TF's form: average -= (1 - decay) * (average - value); exact for constants.
                self.ema[key] = average - (1.0 - decay) * (average - masters[key])
        return loss, correct, norm

    # --- evaluation -------------------------------------------------------------------------

    def evaluation_weights(self) -> dict[str, mx.array]:
        """Return the weights evaluation uses: the moving average when it is on."""
        weights = model_weights(self.model)
        weights.update(self.ema)
        return weights

    def evaluate(self) -> dict[str, float | None]:
        """Return validation loss, top-1 and top-5 of the averaged weights (eval mode)."""
        if not self.val_samples:
            return {"val_loss": None, "val_top1": None, "val_top5": None}
        if self._eval_model is None:
            self._eval_model = kernels.install(InceptionV3(self.model.config, init_weights=False))
        model = self._eval_model
        model.update(tree_unflatten(list(self.evaluation_weights().items())))
        model.eval()
        k = min(5, len(self.classes))
        loss_sum = top1 = topk = count = 0.0
        failure = None
        try:
            for images, labels in self.val_loader.epoch(0):
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
        self._agree_on_failure(failure, "a validation image")
        loss_sum, top1, topk, count = sum_scalars([loss_sum, top1, topk, count], self.group)
        return {"val_loss": loss_sum / count, "val_top1": top1 / count, "val_top5": topk / count}

    # --- the loop ---------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train until ``epochs`` (or ``max_steps``, or Ctrl-C); return a summary."""
        config, progress = self.config, self.progress
        self._check_processes_agree()
        self._on_main(self._start_run_directory)
        step = self._build_step()
        stopped = None
        restore = self._install_signal_handlers()
        try:
            while progress.epoch < config.epochs:
                if config.max_steps is not None and progress.step >= config.max_steps:
                    stopped = "max_steps"  # resumed with no steps left: change nothing
                    if self.is_main:
                        self._log(f"nothing to train: the run is at step {progress.step} and "
                                  f"--max-steps is {config.max_steps}; resume with a larger "
                                  "--max-steps, or --max-steps 0 for no limit")
                    break
                stopped = self._run_epoch(step)
                if progress.step_in_epoch < self.steps_per_epoch:  # stopped inside the epoch
                    self._save(links=("last",))
                    if self.is_main:
                        self._log(f"stopped ({stopped}) at step {progress.step}; continue "
                                  f"with --resume {self.run_dir}")
                    break
                self._finish_epoch()
                if stopped is not None:
                    break
        finally:
            restore()
        return {
            "run_dir": str(self.run_dir),
            "epochs_completed": progress.epoch,
            "steps": progress.step,
            "stopped": stopped,
            "best_val_top1": progress.best_val_top1,
            "best_epoch": progress.best_epoch,
            "compile_seconds": self.compile_seconds,
            "last_metrics": self.metrics[-1] if self.metrics else None,
        }

    def _start_run_directory(self) -> None:
        """Write train_config.json (at every start: a resumed run may have new epochs,
        max_steps, workers) and say what the run will do."""
        config = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.run_dir / CONFIG_FILE,
                              json.dumps(config.to_dict(), indent=2) + "\n")
        for note in self.notes:
            self._log(f"note: {note}")
        self._log(
            f"training on {len(self.train_samples)} images of {len(self.classes)} classes "
            f"({self.steps_per_epoch} steps of {config.batch_size} per epoch, "
            f"{self.world_size} process(es)), validating on {len(self.val_samples)}"
        )

    # --- several processes ------------------------------------------------------------------------

    def _agree(self, *flags: bool) -> list[bool]:
        """Return, for each flag, whether any process raised it (one all-reduce for all)."""
        if self.world_size == 1:
            return [bool(flag) for flag in flags]
        return [total > 0 for total in sum_scalars([float(f) for f in flags], self.group)]

    def _on_main(self, work: Callable[[], Any]) -> None:
        """Run ``work`` on rank 0 only (writing files, logging); if it fails, every process
        stops with it, instead of waiting forever in its next collective for rank 0."""
        failure = None
        if self.is_main:
            try:
                work()
            except Exception as error:
                failure = error
        (failed,) = self._agree(failure is not None)
        if failure is not None:
            raise failure
        if failed:
            raise InceptionError("stopped: the first process (rank 0) failed; its error says why")

    def _agree_on_failure(self, failure: Exception | None, what: str) -> None:
        """Raise ``failure``; where another process failed instead, raise an error saying so.

        Called by every process at the same point, so that none goes on to a collective that
        a failed process will never join.
        """
        image_failed, other_failed = self._agree(
            isinstance(failure, ImageError),
            failure is not None and not isinstance(failure, ImageError),
        )
        if failure is not None:
            raise failure
        if image_failed:
            raise ImageError(f"another process could not read {what} (its own error names "
                             "the file)")
        if other_failed:
            raise InceptionError("stopped: another process failed; its error says why")

    def _check_processes_agree(self) -> None:
        """Refuse to start unless every process sees the same images and, resumed, stands at
        the same step; then give every process rank 0's weights, optimizer state and average."""
        if self.world_size == 1:
            return
        progress, digest = self.progress, self._fingerprint()
        values = [progress.epoch, progress.step_in_epoch, progress.step, self.steps_per_epoch,
                  len(self.val_samples), *(int(digest[i:i + 4], 16) for i in range(0, 16, 4))]
        if not same_everywhere(values, self.group):
            raise ConfigError(
                "the processes disagree about the run: each must see the same training and "
                "validation images (the same folders on every machine) and, to resume, the "
                "same checkpoint (copy RUN_DIR from rank 0 to the others)"
            )
        if progress.step > 0:  # resumed: one copy of the state, whatever each process read
            self.model.update(broadcast_tree(self.model.parameters(), self.group))
            self.optimizer.state = broadcast_tree(self.optimizer.state, self.group)
            self.ema.update(broadcast_tree(dict(self.ema), self.group))
            mx.eval(self._state())

    def request_stop(self) -> None:
        """Ask the loop to save a resumable checkpoint and return after the current step."""
        self._stop_requested = True

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, frame):
            if self._stop_requested:  # a second Ctrl-C: stop now, without saving
                raise KeyboardInterrupt
            self._stop_requested = True
            if self.is_main:
                self._log("\nstopping after this step to save a checkpoint "
                          "(Ctrl-C again to abort without saving)")

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore():
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    def _after_step(self) -> tuple[str | None, bool]:
        """Return why to stop now (or None) and whether a periodic checkpoint is due, the
        same on every process (each must leave, and save, at the same step)."""
        if self.config.max_steps is not None and self.progress.step >= self.config.max_steps:
            return "max_steps", False
        save_due = self.is_main and time.monotonic() - self._last_save > SAVE_INTERVAL_SECONDS
        stop, save_due = self._agree(self._stop_requested, save_due)
        return ("interrupted" if stop else None), save_due

    def _dropout_keys(self, step: int) -> mx.array:
        """Return a key per micro-batch of this process: from (seed, step, share of the batch),
        shares numbered across processes so that the layout of the batch does not matter."""
        count = self.config.micro_batches
        keys = []
        for share in range(self.rank * count, (self.rank + 1) * count):
            sequence = np.random.SeedSequence([self.config.seed, 3, step, share])
            keys.append(mx.random.key(int(sequence.generate_state(1, np.uint32)[0])))
        return mx.stack(keys)

    def _next_batch(self, batches: Iterator) -> tuple[np.ndarray, np.ndarray] | None:
        """Return the next training batch, or None at the end of the epoch.

        With several processes, each learns whether any could not read its share before the
        step's all-reduce, so no process waits forever for one that stopped: all of them stop
        at the same step, the one with the bad file naming it.
        """
        try:
            batch, failure = next(batches, None), None
        except Exception as error:  # an unreadable image, or anything else in the loader
            batch, failure = None, error
        self._agree_on_failure(failure, "an image of this batch")
        return batch

    def _run_epoch(self, step: Callable) -> str | None:
        """Run the current epoch from where it stands; return why it stopped early, or None.

        Every step is evaluated before the next begins, so the state is consistent whenever
        the loop leaves (stop request, data error): a checkpoint taken then resumes exactly.
        """
        config, progress = self.config, self.progress
        totals = progress.totals
        set_training_mode(self.model, self.frozen)
        state = self._state()
        loader = self.train_loader
        batches = loader.epoch(progress.epoch, start=progress.step_in_epoch)
        bar = ProgressBar(
            self.steps_per_epoch, f"epoch {progress.epoch + 1}/{config.epochs}",
            start=progress.step_in_epoch, enabled=self.show_progress, piped_lines=True,
        )
        mark = [time.perf_counter(), loader.wait_seconds, loader.batches_ready]

        def account() -> None:  # add what happened since the last call to the epoch's totals
            now = time.perf_counter()
            totals.seconds += now - mark[0]
            totals.wait_seconds += loader.wait_seconds - mark[1]
            totals.ready_steps += loader.batches_ready - mark[2]
            mark[:] = [now, loader.wait_seconds, loader.batches_ready]

        try:
            while (batch := self._next_batch(batches)) is not None:
                images, labels = batch
                shape = (config.micro_batches, self.micro_batch) + images.shape[1:]
                first_call = self.compile_seconds is None
                began = time.perf_counter()
                loss, correct, norm = step(
                    mx.array(images).reshape(shape), mx.array(labels).reshape(shape[:2]),
                    self._dropout_keys(progress.step),
                )
                mx.eval(loss, correct, norm, state)
                if first_call:
                    # The first call traces and compiles: keep it out of the throughput.
                    self.compile_seconds = time.perf_counter() - began
                    mark[0] += self.compile_seconds
                loss_value = loss.item()
                for name, value in (("loss", loss_value), ("gradient norm", norm.item())):
                    if not math.isfinite(value):  # raised before this step's weights are saved
                        raise ConfigError(
                            f"the {name} became {value} at step {progress.step + 1}; lower "
                            f"--lr (now {config.learning_rate:g}) and start again"
                        )
                progress.step += 1
                progress.step_in_epoch += 1
                totals.loss += loss_value
                totals.correct += correct.item()
                totals.images += config.batch_size
                totals.steps += 1
                if not first_call:
                    totals.timed_images += config.batch_size
                account()
                bar.update(progress.step_in_epoch, info=_bar_info(totals))
                reason, save_due = self._after_step()
                if reason is not None:
                    return reason
                if save_due:
                    self._save(links=("last",))
        except ImageError as error:
            # Decoding fails between steps, so the state is consistent: keep it.
            account()
            self._save(links=("last",))
            raise DataError(
                f"{error}; fix or remove the file, then continue with --resume {self.run_dir}"
            ) from None
        finally:
            batches.close()
            account()
            bar.close(_bar_info(totals))
        return None

    def _finish_epoch(self) -> None:
        """Evaluate, record metrics, redraw the curves and save checkpoints."""
        progress, totals = self.progress, self.progress.totals
        try:
            evaluation = self.evaluate()
        except ImageError as error:
            # The epoch's steps are done: keep them. The checkpoint is at the epoch's last step,
            # so a resumed run starts by evaluating again.
            self._save(links=("last",))
            raise DataError(
                f"{error}; fix or remove the file, then continue with --resume {self.run_dir}"
            ) from None
        progress.epoch += 1
        progress.step_in_epoch = 0
        record = {
            "epoch": progress.epoch,
            "step": progress.step,
            "train_loss": totals.loss / max(totals.steps, 1),
            "train_top1": totals.correct / max(totals.images, 1),
            **evaluation,
            "learning_rate": float(self.optimizer.learning_rate.item()),
            "images_per_second": (
                totals.timed_images / totals.seconds if totals.seconds > 0 else None
            ),
            "train_seconds": totals.seconds,
            "data_wait_seconds": totals.wait_seconds,
            # Share of the training time spent waiting for decoded images (0 = never starved).
            "data_wait_fraction": (
                totals.wait_seconds / totals.seconds if totals.seconds > 0 else None
            ),
            # Share of the steps whose batch the loader had decoded before the step asked.
            "data_ready_fraction": totals.ready_steps / max(totals.steps, 1),
        }
        self.metrics.append(record)
        links = ["last"]
        top1 = evaluation["val_top1"]
        if top1 is not None and (progress.best_val_top1 is None or top1 > progress.best_val_top1):
            progress.best_val_top1, progress.best_epoch = top1, progress.epoch
            links.append("best")
        progress.totals = EpochTotals()
        # The checkpoint (which holds every record) first: metrics.jsonl then never shows an
        # epoch without a checkpoint, and a resumed run rewrites it from the checkpoint.
        self._save(links=tuple(links))
        self._on_main(lambda: self._write_records(record))

    def _write_records(self, record: dict[str, Any]) -> None:
        write_metrics(self.run_dir / METRICS_FILE, self.metrics)
        draw_curves(self.metrics, self.run_dir / CURVES_FILE)
        self._log(_summary_line(record))

    # --- checkpoints --------------------------------------------------------------------------

    def _save(self, links: tuple[str, ...]) -> None:
        """Write a checkpoint of the current state (rank 0 writes; every process calls this at
        the same step, and all stop if the write fails)."""
        self._last_save = time.monotonic()
        self._on_main(lambda: self._write_checkpoint(links))

    def _write_checkpoint(self, links: tuple[str, ...]) -> None:
        arrays = {f"model/{k}": v for k, v in model_weights(self.model).items()}
        arrays.update({f"optimizer/{k}": v for k, v in tree_flatten(self.optimizer.state)})
        arrays.update({f"ema/{k}": v for k, v in self.ema.items()})
        progress = self.progress
        state = {
            "epoch": progress.epoch,
            "step_in_epoch": progress.step_in_epoch,
            "step": progress.step,
            "best_val_top1": progress.best_val_top1,
            "best_epoch": progress.best_epoch,
            "totals": progress.totals.to_dict(),
            "seed": self.config.seed,
            "data_fingerprint": self._fingerprint(),
            "evaluated_weights": "moving average" if self.ema else "trained",
            "metrics": self.metrics,  # the records of every finished epoch
            "config": self.config.to_dict(),
        }
        checkpoints.save_checkpoint(
            self.run_dir, f"step-{progress.step:08d}", self.evaluation_weights(),
            self.model.config, arrays, state, links,
        )

    def _fingerprint(self) -> str:
        """Return a digest of the training images (paths within the data folder) and labels."""
        digest = hashlib.sha256()
        for path, label in self.train_samples:
            digest.update(f"{os.path.relpath(path, self.config.data)}\0{label}\n".encode())
        return digest.hexdigest()[:16]

    @classmethod
    def resume(
        cls,
        run_dir: str | os.PathLike,
        overrides: dict[str, Any] | None = None,
        **options,
    ) -> Trainer:
        """Return a trainer restored from ``run_dir``'s last checkpoint, ready to ``fit()``."""
        run_dir = Path(os.path.abspath(os.path.expanduser(run_dir)))
        folder = checkpoints.resolve_link(run_dir, "last")
        if folder is None:
            raise CheckpointError(
                f"{run_dir} has no checkpoint to resume (no {run_dir / 'last'}); start a new "
                "run instead"
            )
        arrays, state = checkpoints.load_checkpoint(folder)
        data = dict(state["config"])
        data.update(absolute_paths(data))  # runs saved before paths were stored absolute
        overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        overrides.update(absolute_paths(overrides))
        if overrides.get("max_steps") == 0:
            overrides["max_steps"] = None  # lifts the limit
            if data.get("max_steps") is None:
                del overrides["max_steps"]
        changed = {k: v for k, v in overrides.items() if data.get(k) != v}
        refused = sorted(set(changed) - set(RESUMABLE_OVERRIDES))
        if refused:
            raise ConfigError(
                f"a resumed run keeps its settings ({run_dir / CONFIG_FILE}); only "
                f"{', '.join(RESUMABLE_OVERRIDES)} may change, not {', '.join(refused)}"
            )
        data.update(changed)
        data["given"] = sorted(set(data.get("given", [])) | set(changed))
        data["out"] = str(run_dir)
        saved = read_config(folder)
        trainer = cls(TrainConfig.from_dict(data), _resume_from=saved, **options)
        trainer._restore(arrays, state)
        return trainer

    def _restore(self, arrays: dict[str, mx.array], state: dict[str, Any]) -> None:
        def part(prefix: str) -> dict[str, mx.array]:
            return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}

        try:
            self.model.load_weights(list(part("model/").items()), strict=True)
        except ValueError as error:
            raise CheckpointError(f"the checkpoint does not fit the network ({error})") from None
        self.optimizer.state = tree_unflatten(list(part("optimizer/").items()))
        self.ema.clear()
        self.ema.update(part("ema/"))
        try:
            totals = EpochTotals(**state["totals"])
        except TypeError as error:
            raise CheckpointError(f"the checkpoint's running totals are damaged ({error}); "
                                  "restore it from a copy or start a new run") from None
        self.progress = Progress(
            epoch=state["epoch"], step_in_epoch=state["step_in_epoch"], step=state["step"],
            best_val_top1=state["best_val_top1"], best_epoch=state["best_epoch"], totals=totals,
        )
        if state.get("data_fingerprint") != self._fingerprint() and self.is_main:
            self._log("note: the training images changed since the checkpoint: the rest of the "
                      "run will not repeat the original order exactly")
        history = state.get("metrics")
        if history is None:  # a checkpoint from before checkpoints kept the records
            history = read_metrics(self.run_dir / METRICS_FILE, self._warn)
        self.metrics = [m for m in history if m["epoch"] <= self.progress.epoch]
        self._on_main(self._restore_metrics_file)
        mx.eval(self._state())

    def _restore_metrics_file(self) -> None:
        """Make metrics.jsonl hold exactly the checkpoint's records (a run killed after its
        checkpoint but before the file was written lacks the last epoch's line)."""
        path = self.run_dir / METRICS_FILE
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        except (OSError, UnicodeDecodeError):
            current = ""
        if current == metrics_text(self.metrics) or (current is None and not self.metrics):
            return
        if current is not None:
            self._warn(f"{path} did not match the last checkpoint (the run stopped while "
                       f"writing it); rewritten from the checkpoint's {len(self.metrics)} epochs")
        write_metrics(path, self.metrics)
        draw_curves(self.metrics, self.run_dir / CURVES_FILE)

    def _warn(self, message: str) -> None:
        if self.is_main:
            self._log(f"warning: {message}")


def _bar_info(totals: EpochTotals) -> str:
    if totals.steps == 0:
        return ""
    info = (f"loss {totals.loss / totals.steps:.4f} "
            f"top-1 {100 * totals.correct / max(totals.images, 1):.1f}%")
    if totals.seconds > 0 and totals.timed_images:
        info += f" {totals.timed_images / totals.seconds:.1f} img/s"
    return info


def _tree_add(a, b):
    if isinstance(a, dict):
        return {k: _tree_add(v, b[k]) for k, v in a.items()}
    return a + b


def _tree_scale(a, scale: float):
    if isinstance(a, dict):
        return {k: _tree_scale(v, scale) for k, v in a.items()}
    return a * scale


def _summary_line(record: dict[str, Any]) -> str:
    def pct(value):
        return "-" if value is None else f"{100 * value:.2f}%"

    rate = record.get("images_per_second")
    return (
        f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, "
        f"val top-1 {pct(record['val_top1'])}, top-5 {pct(record['val_top5'])}, "
        f"{rate:.1f} img/s, waiting for data {pct(record['data_wait_fraction'])} of "
        f"{format_duration(record['train_seconds'])}"
        if rate else f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}"
    )


def train(config: TrainConfig, notes: list[str] | None = None, **options) -> dict[str, Any]:
    """Train a new run described by ``config``; return the summary of ``Trainer.fit``."""
    return Trainer(config, notes=notes, **options).fit()
