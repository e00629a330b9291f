"""The training loop: set up, then for each epoch run the steps, evaluate, save.

The step itself (loss, dropout keys, moving average) is ``step.make_train_step``; agreement
between processes is ``distributed``; saving and resuming is ``checkpoint``; the epoch's
metrics are ``history``. This module joins them:

    Trainer(config)   read the folders, build the network and optimizer (or ``Trainer.resume``)
    fit()             for each epoch: _run_epoch (steps, Ctrl-C, periodic saves), then
                      _finish_epoch (evaluate, record, save ``last`` and ``best``)

Every step is evaluated before the next begins, so whenever the loop leaves (the end, Ctrl-C,
``max_steps``, an unreadable image) the state is consistent and a checkpoint taken then resumes
bit for bit. The data order and each image's augmentation come from (seed, epoch, position) (see
``data.loader``), the dropout keys from (seed, step, share): the seed and the step restore
every random stream.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from .. import kernels
from ..atomic import write_text_atomically
from ..checkpoints.store import model_weights
from ..data.augment import training_input
from ..data.folder import ImageFolder
from ..data.images import load_image, naming
from ..data.loader import BatchLoader, split_samples
from ..data.transforms import preprocess
from ..errors import DataError, ImageError
from ..model import InceptionV3, InceptionV3Config
from ..progress import ProgressBar
from . import checkpoint as checkpoints
from .checkpoint import CONFIG_FILE, Progress
from .distributed import (
    any_process,
    broadcast_tree,
    init_group,
    on_main,
    raise_any_failure,
    require_same_run,
)
from .divergence import check_step
from .evaluation import (
    initial_statistics_warning,
    precise_statistics,
    validation_metrics,
    weight_decay_penalty,
)
from .history import (
    METRICS_FILE,
    EpochTotals,
    epoch_record,
    progress_text,
    read_metrics,
    restore_records,
    summary_line,
    write_records,
)
from .network import build_network, freeze, frozen_modules, set_training_mode
from .optim import TFRMSProp
from .recipe import ConfigError, TrainConfig, check
from .signals import stop_on_signals
from .step import KeyedDropout, averaged_part, dropout_keys, learning_rate_schedule, make_train_step
from .steplog import StepLog

# A checkpoint at least this often (TF-slim's save_interval_secs=600), besides epoch ends.
SAVE_INTERVAL_SECONDS = 600.0


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
            on_main(self.group, self._refuse_existing_run)

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

        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise DataError(
                f"{config.data}: {len(self.train_samples)} training images are fewer than one "
                f"batch of {config.batch_size}; lower --batch-size"
            )
        self.schedule = learning_rate_schedule(config, self.steps_per_epoch)
        self.optimizer = TFRMSProp(
            self.schedule, config.rmsprop_decay,
            config.rmsprop_momentum, config.rmsprop_epsilon,
        )
        self.optimizer.init(self.model.trainable_parameters())
        self.ema: dict[str, mx.array] = {}  # the moving average, empty when it is off
        if config.ema_decay > 0:
            self.ema.update(averaged_part(self.model, model_weights(self.model)))
        self.progress = Progress()
        self.metrics: list[dict[str, Any]] = []
        self.fingerprint = checkpoints.data_fingerprint(self.train_samples, config.data)
        self._stop_requested = False
        self._eval_model: InceptionV3 | None = None
        self._statistics: tuple[int, dict[str, mx.array]] | None = None  # (step, recomputed)
        if config.init and _resume_from is None and (warning := initial_statistics_warning(
                self.model, self.statistics_loader)):
            self._warn(warning)
        self._last_save = time.monotonic()
        self.compile_seconds: float | None = None
        self.step_log = StepLog(self.run_dir, self._warn, enabled=self.is_main)

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
        skipped = folder.skipped
        if config.val:
            validation = ImageFolder(config.val, folder.class_to_index, min_classes=1)
            self.val_samples = list(validation.samples)
            skipped = skipped + validation.skipped
        elif config.val_split > 0:
            self.train_samples, self.val_samples = split_samples(
                self.train_samples, config.val_split, config.seed, root=config.data
            )
        for problem in skipped:
            self._warn(problem)

        # The model is built after the classes are known: the loaders ask for its
        # preprocessing only when they decode.
        def training_sample(path: Path, label: int, seed: tuple[int, ...]) -> np.ndarray:
            rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
            return training_input(
                load_image(path), config.image_size, rng, self.model.config.preprocessing,
                tuple(config.crop_scale), tuple(config.crop_ratio), config.flip,
            )

        def evaluation_sample(path: Path, label: int, seed: tuple[int, ...]) -> np.ndarray:
            with naming(path):
                return preprocess(load_image(path), self.model.config.preprocessing)

        per_process = config.batch_size // self.world_size
        self.micro_batch = per_process // config.micro_batches
        shared = dict(rank=self.rank, world_size=self.world_size, workers=config.workers,
                      prefetch=config.prefetch)
        self.train_loader = BatchLoader(
            self.train_samples, training_sample, config.batch_size, shuffle=True,
            drop_last=True, seed=config.seed, **shared,
        )
        self.val_loader = BatchLoader(
            self.val_samples, evaluation_sample, max(per_process, 2) * self.world_size,
            shuffle=False, drop_last=False, **shared,
        )
        # Precise BN: a fixed draw of training images, in batches of the training step's
        # BatchNorm groups, prepared as validation prepares its images.
        chosen = np.random.default_rng(config.seed).permutation(len(self.train_samples))
        self.statistics_loader = BatchLoader(
            [self.train_samples[i] for i in chosen[:config.precise_bn_images]],
            evaluation_sample, self.micro_batch * self.world_size, shuffle=False,
            drop_last=True, **shared,
        )

    def state(self) -> list:
        """Return everything a step reads and changes (``mx.compile``'s inputs and outputs)."""
        return [self.model.state, self.optimizer.state, mx.random.state, self.ema]

    # --- the loop ---------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train until ``epochs`` (or ``max_steps``, or Ctrl-C); return a summary."""
        config, progress = self.config, self.progress
        self._check_processes_agree()
        on_main(self.group, self._start_run_directory)
        step = make_train_step(self.model, self.optimizer, self.ema, config, self.group)
        if config.compile:
            state = self.state()
            step = mx.compile(step, inputs=state, outputs=state)
        stopped = None
        with stop_on_signals(self):
            while progress.epoch < config.epochs:
                if config.max_steps is not None and progress.step >= config.max_steps:
                    stopped = "max_steps"  # resumed with no steps left: change nothing
                    self._say(f"nothing to train: the run is at step {progress.step} and "
                              f"--max-steps is {config.max_steps}; resume with a larger "
                              "--max-steps, or --max-steps 0 for no limit")
                    break
                stopped = self._run_epoch(step)
                if progress.step_in_epoch < self.steps_per_epoch:  # stopped inside the epoch
                    self._save(links=("last",))
                    self._say(f"stopped ({stopped}) at step {progress.step}; continue with "
                              f"--resume {self.run_dir}")
                    break
                self._finish_epoch()
                if stopped is not None:
                    break
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

    def _run_epoch(self, step: Callable) -> str | None:
        """Run the current epoch from where it stands; return why it stopped early, or None."""
        config, progress = self.config, self.progress
        totals, loader = progress.totals, self.train_loader
        set_training_mode(self.model, self.frozen)
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
                keys = dropout_keys(config.seed, progress.step, self.rank, config.micro_batches)
                first_call, began = self.compile_seconds is None, time.perf_counter()
                loss, correct, norm = step(
                    mx.array(images).reshape(shape), mx.array(labels).reshape(shape[:2]), keys
                )
                mx.eval(loss, correct, norm, self.state())
                if first_call:  # the first call traces (and compiles): not in the throughput
                    self.compile_seconds = time.perf_counter() - began
                    mark[0] += self.compile_seconds
                loss_value = loss.item()  # checked before this step is counted or saved
                check_step(loss_value, norm.item(), progress, self.metrics, len(self.classes),
                           config)
                progress.step += 1
                progress.step_in_epoch += 1
                totals.loss += loss_value
                totals.correct += correct.item()
                totals.images += config.batch_size
                totals.steps += 1
                if not first_call:
                    totals.timed_images += config.batch_size
                account()
                bar.update(progress.step_in_epoch, info=progress_text(totals))
                self.step_log.after_step(progress, self.steps_per_epoch, self.schedule)
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
            bar.close(progress_text(totals))
        return None

    def _next_batch(self, batches: Iterator) -> tuple[np.ndarray, np.ndarray] | None:
        """Return the next training batch, or None at the end of the epoch; if any process
        could not read its share, all stop here, before the step's all-reduce."""
        try:
            batch, failure = next(batches, None), None
        except Exception as error:  # an unreadable image, or anything else in the loader
            batch, failure = None, error
        raise_any_failure(self.group, failure, "an image of this batch")
        return batch

    def _after_step(self) -> tuple[str | None, bool]:
        """Return why to stop now (or None) and whether a periodic checkpoint is due, the
        same on every process (each must leave, and save, at the same step)."""
        if self.config.max_steps is not None and self.progress.step >= self.config.max_steps:
            return "max_steps", False
        save_due = self.is_main and time.monotonic() - self._last_save > SAVE_INTERVAL_SECONDS
        stop, save_due = any_process(self.group, self._stop_requested, save_due)
        return ("interrupted" if stop else None), save_due

    def _finish_epoch(self) -> None:
        """Evaluate, record the epoch's metrics, save checkpoints, rewrite metrics and curves."""
        progress = self.progress
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
        record = epoch_record(progress.epoch, progress.step, progress.totals, evaluation,
                              float(self.optimizer.learning_rate.item()))
        record["weight_decay_penalty"] = weight_decay_penalty(
            model_weights(self.model), self.config.weight_decay)
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

        def write() -> None:
            write_records(self.run_dir, self.metrics)
            self._log(summary_line(record))

        on_main(self.group, write)

    # --- evaluation -------------------------------------------------------------------------------

    def evaluation_weights(self) -> dict[str, mx.array]:
        """Return the weights evaluation uses: the moving average when it is on, with BatchNorm
        statistics recomputed for them (``precise_bn_images``; once per step, on every process)."""
        weights = {**model_weights(self.model), **self.ema}
        if len(self.statistics_loader) == 0:
            return weights
        if self._statistics is None or self._statistics[0] != self.progress.step:
            self._statistics = (self.progress.step, precise_statistics(
                self._evaluation_model(weights), self.frozen, self.statistics_loader, self.group))
        weights.update(self._statistics[1])
        return weights

    def _evaluation_model(self, weights: dict[str, mx.array]) -> InceptionV3:
        if self._eval_model is None:
            self._eval_model = kernels.install(InceptionV3(self.model.config, init_weights=False))
        self._eval_model.update(tree_unflatten(list(weights.items())))
        return self._eval_model

    def evaluate(self) -> dict[str, float | None]:
        """Return validation loss, top-1 and top-5 of the evaluated weights (eval mode)."""
        if not self.val_samples:
            return {"val_loss": None, "val_top1": None, "val_top5": None}
        model = self._evaluation_model(self.evaluation_weights())
        model.eval()
        return validation_metrics(model, self.val_loader, len(self.classes), self.group)

    # --- start, stop, save, resume ------------------------------------------------------------

    def _start_run_directory(self) -> None:
        """Write train_config.json (at every start: a resumed run may have new epochs,
        max_steps, workers) and say what the run will do."""
        config = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.run_dir / CONFIG_FILE,
                              json.dumps(config.to_dict(), indent=2) + "\n")
        self.step_log.restore(self.progress.step)  # the steps a resumed run repeats, and no more
        for note in self.notes:
            self._log(f"note: {note}")
        self._log(
            f"training on {len(self.train_samples)} images of {len(self.classes)} classes "
            f"({self.steps_per_epoch} steps of {config.batch_size} per epoch, "
            f"{self.world_size} process(es)), validating on {len(self.val_samples)}"
        )

    def _check_processes_agree(self) -> None:
        """Refuse to start unless every process sees the same images and, resumed, stands at
        the same step; then give every process rank 0's weights, optimizer state and average."""
        if self.world_size == 1:
            return
        progress, digest = self.progress, self.fingerprint
        require_same_run(self.group, [
            progress.epoch, progress.step_in_epoch, progress.step, self.steps_per_epoch,
            len(self.val_samples), *(int(digest[i:i + 4], 16) for i in range(0, 16, 4)),
        ])
        if progress.step > 0:  # resumed: one copy of the state, whatever each process read
            self.model.update(broadcast_tree(self.model.parameters(), self.group))
            self.optimizer.state = broadcast_tree(self.optimizer.state, self.group)
            self.ema.update(broadcast_tree(dict(self.ema), self.group))
            mx.eval(self.state())

    def request_stop(self) -> None:
        """Ask the loop to save a resumable checkpoint and return after the current step."""
        self._stop_requested = True

    def _save(self, links: tuple[str, ...]) -> None:
        """Write a checkpoint of the current state (rank 0 writes; every process calls this at
        the same step, and all stop if the write fails)."""
        self._last_save = time.monotonic()

        try:  # on every process: it may recompute statistics
            evaluated = self.evaluation_weights()
        except ImageError:  # the training state is what this save must keep; it stops after
            evaluated = {**model_weights(self.model), **self.ema}

        def write() -> None:
            state = checkpoints.trainer_state(self.progress, self.config, self.fingerprint,
                                              bool(self.ema), self.metrics)
            arrays = checkpoints.checkpoint_arrays(self.model, self.optimizer, self.ema)
            checkpoints.save_checkpoint(
                self.run_dir, f"step-{self.progress.step:08d}", evaluated,
                self.model.config, arrays, state, links,
            )

        on_main(self.group, write)

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: dict[str, Any] | None = None,
               **options) -> Trainer:
        """Return a trainer restored from ``run_dir``'s last checkpoint, ready to ``fit()``."""
        config, network, arrays, state = checkpoints.resume_point(run_dir, overrides)
        trainer = cls(config, _resume_from=network, **options)
        checkpoints.restore_arrays(arrays, trainer.model, trainer.optimizer, trainer.ema)
        trainer.progress = progress = checkpoints.progress_from_state(
            state, trainer.steps_per_epoch)
        if state.get("data_fingerprint") != trainer.fingerprint:
            trainer._say("note: the training images changed since the checkpoint: the rest of "
                         "the run will not repeat the original order exactly")
        history = state.get("metrics")
        if history is None:  # a checkpoint from before checkpoints kept the records
            history = read_metrics(trainer.run_dir / METRICS_FILE, trainer._warn)
        trainer.metrics = [m for m in history if m["epoch"] <= progress.epoch]
        on_main(trainer.group,
                lambda: restore_records(trainer.run_dir, trainer.metrics, trainer._warn))
        mx.eval(trainer.state())
        return trainer

    def _say(self, message: str) -> None:
        if self.is_main:
            self._log(message)

    def _warn(self, message: str) -> None:
        self._say(f"warning: {message}")

