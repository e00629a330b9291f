"""Training data: scikit-learn's handwritten digits as an ImageFolder tree, the augmentation and
the threaded loader (order, shards, resumption, prefetching).

``make_digits_folder`` is shared with the other training tests.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlx_inception.data.augment import augment, random_resized_crop_box, training_input
from mlx_inception.data.loader import BatchLoader, epoch_order, shard_bounds, split_samples
from mlx_inception.model import Preprocessing


def make_digits_folder(
    root: Path, classes: int, train_per_class: int, val_per_class: int, size: int = 75
) -> Path:
    """Write sklearn's real 8x8 digits, upscaled to ``size`` px PNGs, as root/{train,val}/digit_K.

    The first ``train_per_class`` images of each digit (in the data set's order) go to train,
    the next ``val_per_class`` to val: different writers' digits, no image in both.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts: dict[int, int] = {}
    for pixels, label in zip(digits.images, digits.target, strict=True):
        label = int(label)
        if label >= classes:
            continue
        index = counts.get(label, 0)
        if index >= train_per_class + val_per_class:
            continue
        counts[label] = index + 1
        split = "train" if index < train_per_class else "val"
        folder = root / split / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(np.round(pixels * (255 / 16)).astype(np.uint8))
        image.resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{index:04d}.png")
    return root


def fake_samples(count: int, classes: int = 3) -> list[tuple[Path, int]]:
    return [(Path(f"image_{i:03d}.png"), i % classes) for i in range(count)]


def record_position(path: Path, label: int, seed: tuple[int, ...]) -> np.ndarray:
    """A stand-in decoder: the 'image' is the sample's number and the seed's position."""
    return np.array([int(path.stem.split("_")[1]), seed[-1]], dtype=np.float32)


# --- augmentation ---------------------------------------------------------------------------


def test_random_resized_crop_box_stays_inside_the_image_within_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(500):
        left, top, right, bottom = random_resized_crop_box(
            640, 427, rng, scale=(0.05, 1.0), ratio=(3 / 4, 4 / 3)
        )
        width, height = right - left, bottom - top
        assert 0 <= left < right <= 640 and 0 <= top < bottom <= 427
        # Rounding to whole pixels moves the area and ratio slightly off the drawn values.
        assert 0.04 <= width * height / (640 * 427) <= 1.0
        assert 0.74 <= width / height <= 1.35


def test_random_resized_crop_falls_back_to_a_centre_crop_clamped_to_the_ratio():
    # A 1000x10 strip cannot hold a crop of ratio <= 4/3 with area >= 50%: torchvision's fallback.
    box = random_resized_crop_box(1000, 10, np.random.default_rng(0), scale=(0.5, 1.0))
    assert box == (493, 0, 506, 10)


def test_augmentation_is_fixed_by_its_seed():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), np.uint8))
    first = augment(image, 32, np.random.default_rng(7))
    again = augment(image, 32, np.random.default_rng(7))
    other = augment(image, 32, np.random.default_rng(8))
    assert first.size == (32, 32)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_horizontal_flip_mirrors_about_half_the_draws():
    image = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4) * 16).convert("RGB")
    flipped = 0
    for seed in range(200):
        out = np.asarray(augment(image, 4, np.random.default_rng(seed), scale=(1.0, 1.0),
                                 ratio=(1.0, 1.0)))
        if out[0, 0, 0] > out[0, -1, 0]:
            flipped += 1
    assert 70 <= flipped <= 130  # binomial(200, 1/2): 70..130 is beyond 4 standard deviations


def test_training_input_is_normalised_like_evaluation():
    image = Image.new("RGB", (50, 40), (124, 116, 104))  # ImageNet's mean colour
    array = training_input(image, 32, np.random.default_rng(0), Preprocessing())
    assert array.shape == (32, 32, 3) and array.dtype == np.float32
    assert np.abs(array).max() < 0.01


# --- order, shards, resumption -------------------------------------------------------------


def test_epoch_order_is_a_seeded_permutation_that_changes_every_epoch():
    first, again, next_epoch = epoch_order(50, 3, 0), epoch_order(50, 3, 0), epoch_order(50, 3, 1)
    assert sorted(first) == list(range(50))
    assert np.array_equal(first, again) and not np.array_equal(first, next_epoch)


def test_shards_of_all_processes_make_up_the_global_batch():
    samples = fake_samples(40)
    whole = BatchLoader(samples, record_position, 8, shuffle=True, drop_last=True, seed=1)
    parts = [
        BatchLoader(samples, record_position, 8, shuffle=True, drop_last=True, seed=1,
                    rank=rank, world_size=2)
        for rank in range(2)
    ]
    for (images, labels), *shards in zip(whole.epoch(2), *(p.epoch(2) for p in parts),
                                         strict=True):
        assert np.array_equal(images, np.concatenate([s[0] for s in shards]))
        assert np.array_equal(labels, np.concatenate([s[1] for s in shards]))


def test_last_partial_batch_is_dropped_for_training_and_kept_for_evaluation():
    samples = fake_samples(10)
    training = BatchLoader(samples, record_position, 4, shuffle=True, drop_last=True)
    evaluation = BatchLoader(samples, record_position, 4, shuffle=False, drop_last=False)
    assert len(training) == 2 and [len(b[1]) for b in training.epoch(0)] == [4, 4]
    assert len(evaluation) == 3 and [len(b[1]) for b in evaluation.epoch(0)] == [4, 4, 2]


def test_starting_at_a_step_gives_the_same_batches_as_running_through():
    samples = fake_samples(30)
    loader = BatchLoader(samples, record_position, 5, shuffle=True, drop_last=True, seed=4)
    straight = list(loader.epoch(1))
    resumed = list(loader.epoch(1, start=3))
    assert len(resumed) == len(straight) - 3
    for (a, la), (b, lb) in zip(straight[3:], resumed, strict=True):
        assert np.array_equal(a, b) and np.array_equal(la, lb)


def test_sample_seeds_do_not_depend_on_the_number_of_workers():
    samples = fake_samples(24)
    one = BatchLoader(samples, record_position, 6, shuffle=True, drop_last=True, workers=1)
    four = BatchLoader(samples, record_position, 6, shuffle=True, drop_last=True, workers=4)
    for (a, _), (b, _) in zip(one.epoch(0), four.epoch(0), strict=True):
        assert np.array_equal(a, b)


def test_shard_bounds_split_a_short_last_batch_as_evenly_as_possible():
    assert [shard_bounds(5, rank, 2) for rank in range(2)] == [(0, 3), (3, 5)]
    assert [shard_bounds(8, rank, 4) for rank in range(4)] == [(0, 2), (2, 4), (4, 6), (6, 8)]


def test_held_out_split_takes_about_a_fraction_of_every_class_and_is_reproducible():
    samples = fake_samples(3000, classes=3)
    train, val = split_samples(samples, 0.2, seed=0)
    assert not set(train) & set(val) and len(train) + len(val) == 3000
    for label in range(3):  # 1000 draws of p = 0.2: 200 +- 13 (one standard deviation)
        assert 150 <= sum(1 for _, held in val if held == label) <= 250
    assert split_samples(samples, 0.2, seed=0) == (train, val)
    assert split_samples(samples, 0.2, seed=1) != (train, val)


def test_adding_or_removing_files_moves_no_other_image_between_the_splits():
    samples = fake_samples(60, classes=3)
    train, val = split_samples(samples, 0.1, seed=0)
    for removed in (val[0], train[0]):  # "fix or remove the file, then --resume"
        fewer = [s for s in samples if s != removed]
        train_after, val_after = split_samples(fewer, 0.1, seed=0)
        assert set(val_after) == set(val) - {removed}
        assert set(train_after) == set(train) - {removed}
    more = samples + fake_samples(90, classes=3)[60:]
    train_after, val_after = split_samples(more, 0.1, seed=0)
    assert set(val) <= set(val_after) and set(train) <= set(train_after)


def test_every_class_of_two_or_more_keeps_an_image_on_each_side():
    samples = fake_samples(6, classes=3)  # two images a class
    for fraction in (0.01, 0.5, 0.99):
        train, val = split_samples(samples, fraction, seed=0)
        assert sorted(label for _, label in train) == [0, 1, 2]
        assert sorted(label for _, label in val) == [0, 1, 2]
    lone = [(Path("only.png"), 0), *fake_samples(6, classes=3)[1:]]
    train, val = split_samples(lone[:1], 0.5, seed=0)
    assert (train, val) == (lone[:1], [])  # one image: it trains


# The loader's tests synchronise on what the workers have done, never on wall time: the CI
# machine's cores are shared, so any speed threshold would be a coin toss. HANG_GUARD only
# stops a broken loader from blocking the suite; it is not a speed requirement.
HANG_GUARD_SECONDS = 60.0


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"the loader never {what}")
        time.sleep(0.001)


class Recorder:
    """A stand-in decoder that records which samples were started."""

    def __init__(self):
        self.started: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, path: Path, label: int, seed: tuple[int, ...]) -> np.ndarray:
        with self.lock:
            self.started.append(int(path.stem.split("_")[1]))
        return record_position(path, label, seed)


def test_loader_keeps_prefetch_batches_decoding_while_the_consumer_holds_one():
    decode = Recorder()
    loader = BatchLoader(fake_samples(20), decode, 2, shuffle=False, drop_last=True, workers=2,
                         prefetch=3)
    batches = loader.epoch(0)
    next(batches)  # the consumer now holds batch 0 (images 0, 1) and "trains" on it
    wait_for(lambda: loader.images_decoded == 8, "decoded the 3 batches after the first")
    # Exactly `prefetch` batches ahead (images 2..7), and no more: batch 4 waits for a request.
    assert sorted(decode.started) == list(range(8))
    batches.close()


def test_batches_decoded_ahead_are_served_without_waiting_for_decoding():
    loader = BatchLoader(fake_samples(20), Recorder(), 2, shuffle=False, drop_last=True,
                         workers=2, prefetch=3)
    served = 0
    for served, _ in enumerate(loader.epoch(0), start=1):
        # A consumer slower than the decoders: everything queued finishes before it asks again.
        queued = 2 * min(served + loader.prefetch, len(loader))
        wait_for(lambda queued=queued: loader.images_decoded == queued, "caught up")
    assert served == len(loader) == 10
    # Every batch after the first was decoded before it was asked for (the first was submitted
    # at the first request, so it may or may not have been).
    assert loader.batches_ready in (len(loader) - 1, len(loader))


def test_batches_come_in_order_when_decoding_finishes_out_of_order():
    later_batch_done = threading.Event()

    def decode(path: Path, label: int, seed: tuple[int, ...]) -> np.ndarray:
        number = int(path.stem.split("_")[1])
        if number == 0:  # batch 0's first image finishes only after batch 2's last one
            assert later_batch_done.wait(HANG_GUARD_SECONDS), "image 5 was never decoded"
        if number == 5:
            later_batch_done.set()
        return record_position(path, label, seed)

    loader = BatchLoader(fake_samples(12), decode, 2, shuffle=False, drop_last=True, workers=4,
                         prefetch=3)
    numbers = [images[:, 0].astype(int).tolist() for images, _ in loader.epoch(0)]
    assert later_batch_done.is_set()
    assert numbers == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]


def test_an_unreadable_image_is_reported_at_the_batch_that_needs_it(tmp_path):
    from mlx_inception.data.images import load_image
    from mlx_inception.errors import ImageError

    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")

    def decode(path: Path, label: int, seed: tuple[int, ...]) -> np.ndarray:
        return np.asarray(load_image(path), np.float32)

    loader = BatchLoader([(good, 0), (good, 0), (bad, 1), (good, 1)], decode, 2,
                         shuffle=False, drop_last=True)
    batches = loader.epoch(0)
    assert next(batches)[0].shape == (2, 8, 8, 3)
    with pytest.raises(ImageError, match="bad.png"):
        next(batches)
