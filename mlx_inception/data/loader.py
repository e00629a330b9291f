"""Batches of decoded images, prepared by worker threads ahead of the training step.

The order of an epoch and every sample's augmentation are functions of (seed, epoch, position):
the order is a permutation drawn from ``SeedSequence([seed, 0, epoch])`` and the sample at
position ``p`` is augmented with ``SeedSequence([seed, 1, epoch, p])``. Nothing depends on which
thread decodes what or on how far ahead the loader runs, so a run resumed at step ``k`` of an
epoch sees exactly the batches an uninterrupted run would, and each process of a data-parallel
run reads only its own share of every global batch.

Pillow decodes and resizes with the GIL released, so threads (not processes) keep the step fed
without pickling images. ``batches_ready`` counts the batches that were fully decoded before the
consumer asked for them and ``wait_seconds`` how long it was kept waiting for the others.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

Sample = tuple[Path, int]
# (path, label, seed) -> float32 (H, W, 3): decode, augment or preprocess one image.
LoadSample = Callable[[Path, int, tuple[int, ...]], np.ndarray]


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """Return the order in which an epoch visits the samples (a permutation of their indices)."""
    if not shuffle:
        return np.arange(num_samples)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0, epoch]))
    return rng.permutation(num_samples)


def sample_seed(seed: int, epoch: int, position: int) -> tuple[int, ...]:
    """Return the entropy that fixes the augmentation of the sample at ``position`` in ``epoch``."""
    return (seed, 1, epoch, position)


def shard_bounds(batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Return the [start, stop) slice of a global batch that process ``rank`` reads.

    Contiguous, equal shares (the last global batch of an evaluation may be shorter: the shares
    are then as equal as ``numpy.array_split`` makes them).
    """
    edges = [len(part) for part in np.array_split(np.arange(batch_size), world_size)]
    start = sum(edges[:rank])
    return start, start + edges[rank]


def split_samples(
    samples: Sequence[Sample], fraction: float, seed: int, root: str | os.PathLike = ""
) -> tuple[list[Sample], list[Sample]]:
    """Return (train, held-out): each image held out with probability ``fraction``, decided by
    a hash of ``seed`` and its path within ``root``; both keep the original order.

    Each image's fate depends on its own path only, so adding or removing files moves no other
    image between training and validation (a resumed run after "fix or remove the file"
    validates on no image it trained on). Every class of two or more images keeps at least one
    on each side: the image with the lowest hash is held out if none was (the one exception to
    the rule above: a class whose only held-out image is removed holds out its next), the one
    with the highest trained on if all were; a class's only image trains.
    """
    def draw(path) -> float:
        name = os.path.relpath(path, root) if root else str(path)
        digest = hashlib.sha256(f"{seed}\0{Path(name).as_posix()}".encode()).digest()
        return int.from_bytes(digest[:8], "little") / 2.0**64

    by_class: dict[int, list[tuple[float, int]]] = {}
    for index, (path, label) in enumerate(samples):
        by_class.setdefault(label, []).append((draw(path), index))
    held_out: set[int] = set()
    for draws in by_class.values():
        chosen = {index for value, index in draws if value < fraction}
        if len(draws) < 2:
            chosen = set()  # a class's only image trains
        elif fraction > 0:
            if not chosen:
                chosen = {min(draws)[1]}
            elif len(chosen) == len(draws):
                chosen.discard(max(draws)[1])
        held_out |= chosen
    train = [s for i, s in enumerate(samples) if i not in held_out]
    val = [s for i, s in enumerate(samples) if i in held_out]
    return train, val


class BatchLoader:
    """Yields this process's (images, labels) of every global batch of an epoch, in order.

    ``batch_size`` is the global batch (all processes together); process ``rank`` of
    ``world_size`` receives its contiguous share of each. With ``drop_last`` the final partial
    batch is dropped, so every step has the same shape (a new shape would recompile the
    step); evaluation keeps it. Images are decoded by ``workers`` threads, ``prefetch``
    batches ahead.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        load_sample: LoadSample,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 4,
        prefetch: int = 4,
    ):
        if batch_size < world_size:
            raise ValueError(f"batch size {batch_size} is smaller than {world_size} processes")
        self.samples = list(samples)
        self.load_sample = load_sample
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.workers = max(1, workers)
        self.prefetch = max(1, prefetch)
        self.wait_seconds = 0.0  # total time __next__ was blocked on decoding
        self.batches_served = 0
        self.batches_ready = 0  # served batches that were decoded before they were asked for
        self.images_decoded = 0  # decodes finished (in any order), counted by the workers
        self._count_lock = threading.Lock()

    def __len__(self) -> int:
        """Return the number of batches in one epoch."""
        full, rest = divmod(len(self.samples), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def plan(self, epoch: int) -> list[list[tuple[Path, int, tuple[int, ...]]]]:
        """Return this process's share of every batch of ``epoch`` as (path, label, seed) jobs."""
        order = epoch_order(len(self.samples), self.seed, epoch, self.shuffle)
        batches = []
        for first in range(0, len(order), self.batch_size):
            size = min(self.batch_size, len(order) - first)
            if size < self.batch_size and self.drop_last:
                break
            start, stop = shard_bounds(size, self.rank, self.world_size)
            jobs = []
            for position in range(first + start, first + stop):
                path, label = self.samples[order[position]]
                jobs.append((path, label, sample_seed(self.seed, epoch, position)))
            batches.append(jobs)
        return batches

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (images float32 (b, H, W, 3), labels int32 (b,)) from batch ``start`` on.

        An error while decoding (``ImageError``) is raised here, at the batch that needs the
        image. Closing the iterator early cancels the work queued ahead.
        """
        plan = iter(self.plan(epoch)[start:])
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="mlx-inception-decode")
        pending: deque[tuple[list[Future], np.ndarray]] = deque()

        def queue_next() -> None:
            jobs = next(plan, None)
            if jobs is not None:
                futures = [pool.submit(self.load_sample, *job) for job in jobs]
                for future in futures:
                    future.add_done_callback(self._count_decoded)
                pending.append((futures, np.array([label for _, label, _ in jobs], np.int32)))

        try:
            for _ in range(self.prefetch):
                queue_next()
            while pending:
                futures, labels = pending.popleft()
                queue_next()  # keep `prefetch` batches in flight while this one finishes
                if all(future.done() for future in futures):
                    self.batches_ready += 1
                began = time.perf_counter()
                images = [future.result() for future in futures]
                self.wait_seconds += time.perf_counter() - began
                self.batches_served += 1
                if not images:  # an evaluation share can be empty on the last, short batch
                    continue
                yield np.stack(images), labels
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _count_decoded(self, future: Future) -> None:
        if not future.cancelled():
            with self._count_lock:
                self.images_decoded += 1
