"""Fuzzing: generated hostile images, checkpoints, configs, run folders and statistics files.

Every case is made by a generator seeded with its number, so a failure names a case that can
be made again (``python tests/test_fuzz.py`` runs them all and prints how many end in each
outcome). Each case must end in the right result or in one line of the project's error class:
no other exception (a traceback), no message over several lines, no file left behind, and
bounded time and memory. The fast tier runs every ``SAMPLE``-th case; ``-m slow`` the rest.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import resource
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from mlx_inception.benchmark_worker import PeakMemory
from mlx_inception.checkpoints import convert, registry, store
from mlx_inception.data.images import load_image
from mlx_inception.data.transforms import preprocess
from mlx_inception.errors import CheckpointError, DataError, ImageError, InceptionError
from mlx_inception.metrics.fid import FeatureStatistics, frechet_distance
from mlx_inception.model import InceptionV3Config
from mlx_inception.model.inception_v3 import MAX_CLASSES, MAX_IMAGE_SIDE
from mlx_inception.training import checkpoint as run_state

SAMPLE = 10  # the fast tier runs case 0, 10, 20, ...
CASE_SECONDS = 10.0  # no single case may take longer (a hang or a blow-up)
MEMORY_GROWTH = 1.5 * 2**30  # no single case may raise the process's peak by more than this


def cases(count: int) -> list:
    """Return ``range(count)`` as pytest params: every SAMPLE-th fast, the others slow."""
    return [pytest.param(i, marks=() if i % SAMPLE == 0 else pytest.mark.slow)
            for i in range(count)]


def peak_memory() -> int:
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def case_memory() -> Callable[[], float]:
    """Start measuring one case's peak memory; return a function giving its growth in bytes.

    On Linux the process's peak is reset to its current size first (``PeakMemory``), so what
    earlier tests allocated never counts; elsewhere only growth past the process's earlier peak
    can be seen.
    """
    memory = PeakMemory()
    if memory.exact:
        return lambda: memory.peak_mib() * 2**20
    before = peak_memory()
    return lambda: peak_memory() - before


def outcome(call, errors=(InceptionError,)):
    """Return ("ok", result) or ("error", message) for ``call()``; any other exception, a
    message over more than one line, or a case over time or memory fails the test."""
    start = time.monotonic()
    growth = case_memory()
    try:
        result = ("ok", call())
    except errors as error:
        message = str(error)
        assert message and "\n" not in message and len(message) < 1500, repr(message[:3000])
        result = ("error", message)
    assert time.monotonic() - start < CASE_SECONDS, "a case ran past its time"
    assert growth() < MEMORY_GROWTH, "memory grew with what a file claims"
    OUTCOMES.append(result[0])
    return result


OUTCOMES: list[str] = []  # what each case ended in, for the tally below


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --------------------------------------------------------------------------------------------
# Images


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def claimed_png(width: int, height: int, rng: random.Random) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` over a few bytes of (maybe) data."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    rows = zlib.compress(b"\0" * min(width + 1, 4096) * min(height, rng.randint(0, 8)))
    return b"\x89PNG\r\n\x1a\n" + header + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def encoded(image: Image.Image, kind: str) -> bytes:
    """Return ``image`` saved as ``kind``, or as PNG (then TIFF) where ``kind`` cannot hold
    its mode."""
    for attempt in (kind, "PNG", "TIFF"):
        buffer = io.BytesIO()
        try:
            image.save(buffer, attempt)
        except (OSError, ValueError):
            continue
        return buffer.getvalue()
    raise AssertionError(f"no format holds mode {image.mode}")


def hostile_image(number: int) -> bytes:
    """Return the bytes of hostile image ``number``: lies in headers, damage, odd modes."""
    rng = random.Random(number)
    kind = number % 8
    if kind == 0:  # random bytes
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000)))
    if kind == 1:  # a header claiming a vast or a very thin image
        side = rng.choice([1, 2, 3, 10**rng.randint(3, 5), 2**31 - 1, 65500])
        other = rng.choice([1, 6000, 40000, 2**20, 2**31 - 1])
        return claimed_png(*((side, other) if rng.random() < 0.5 else (other, side)), rng)
    size = (rng.randint(1, 64), rng.randint(1, 64))
    if kind == 2:  # a small genuinely thin one, the 108-byte PNG of the kind
        size = rng.choice([(1, rng.randint(2000, 60000)), (rng.randint(2000, 60000), 1)])
    mode = rng.choice(["RGB", "L", "LA", "P", "RGBA", "I;16", "I", "F", "CMYK", "1"])
    pixels = np.random.default_rng(number).integers(0, 255, (size[1], size[0]), dtype=np.uint8)
    if mode == "I;16":
        image = Image.fromarray(pixels.astype(np.uint16) * 257)
    else:
        image = Image.fromarray(pixels).convert(mode)
    formats = {"CMYK": ["TIFF", "JPEG"], "F": ["TIFF"], "I": ["TIFF", "PNG"], "I;16": ["PNG"],
               "LA": ["PNG", "WEBP"], "1": ["PNG", "BMP", "GIF"]}
    data = encoded(image, rng.choice(formats.get(mode, ["PNG", "JPEG", "BMP", "GIF", "WEBP"])
                                     if mode != "RGBA" else ["PNG", "WEBP"]))
    if kind in (3, 4):  # truncated
        return data[: rng.randint(1, max(1, len(data) - 1))]
    if kind == 5:  # bytes flipped
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 20)):
            damaged[rng.randrange(len(damaged))] = rng.getrandbits(8)
        return bytes(damaged)
    return data  # kinds 2, 6, 7: valid files of odd modes and shapes


@pytest.mark.parametrize("number", cases(240))
def test_a_hostile_image_decodes_or_fails_in_one_line(number, tmp_path):
    path = tmp_path / f"case{number}.png"
    path.write_bytes(hostile_image(number))
    result, value = outcome(lambda: preprocess(load_image(path)), (ImageError,))
    if result == "ok":
        assert value.shape == (299, 299, 3) and value.dtype == np.float32
        assert np.all(np.isfinite(value))
    assert files_in(tmp_path) == {path.name}


# --------------------------------------------------------------------------------------------
# config.json (this project's) and timm's


HOSTILE_VALUES = [
    -3, 0, 1, 7, 10**12, 2**70, -1e308, 0.5, 1.0, float("nan"), float("inf"), True, False, None,
    "", "5", "x" * 5000, [], {}, [1, 2], [0.1, 0.2, float("nan")], [1, 2, 3], {"a": 1},
    ["a"] * 3, 100000, 299, 2048, 2049, "bicubic", "299",
]
FIELDS = ["num_classes", "aux_logits", "transform_input", "dropout", "pool_count_include_pad",
          "bn_aux", "stem", "mixed_7c_pool", "labels", "source", "preprocessing"]
PREPROCESSING_FIELDS = ["resize_size", "crop_size", "interpolation", "mean", "std"]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def hostile_config(number: int) -> str:
    """Return the text of hostile config.json ``number``: wrong types, ranges, sizes, nesting."""
    rng = random.Random(number)
    if number % 15 == 14:
        return rng.choice([nested(rng.choice([40, 5000, 100000])), "[1, 2]", "null", "{",
                           '{"num_classes": 3', "\ufeff{}", "1e999999", '"text"'])
    data = InceptionV3Config(num_classes=3, labels=["a", "b", "c"]).to_dict()
    for _ in range(rng.randint(1, 3)):
        where = rng.random()
        if where < 0.6:
            data[rng.choice(FIELDS)] = rng.choice(HOSTILE_VALUES)
        elif where < 0.9 and isinstance(data.get("preprocessing"), dict):
            data["preprocessing"][rng.choice(PREPROCESSING_FIELDS)] = rng.choice(HOSTILE_VALUES)
        elif where < 0.95:
            data.pop(rng.choice(FIELDS), None)
        else:
            data[rng.choice(["colour", "1", "num-classes"])] = 1
    return json.dumps(data)


def assert_config_is_sane(config: InceptionV3Config) -> None:
    """The invariants a config that was accepted must hold."""
    assert isinstance(config.num_classes, int) and 1 <= config.num_classes <= MAX_CLASSES
    assert isinstance(config.dropout, float) and 0 <= config.dropout < 1
    assert config.labels is None or isinstance(config.labels, str) or (
        len(config.labels) == config.num_classes and all(isinstance(x, str) for x in config.labels)
    )
    sizes = (config.preprocessing.resize_size, config.preprocessing.crop_size)
    assert all(isinstance(s, int) and 1 <= s <= MAX_IMAGE_SIDE for s in sizes)
    assert all(math.isfinite(v) for v in config.preprocessing.mean + config.preprocessing.std)
    assert all(v > 0 for v in config.preprocessing.std)
    assert InceptionV3Config.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("number", cases(150))
def test_a_hostile_config_is_read_or_refused_in_one_line(number, tmp_path):
    (tmp_path / "config.json").write_text(hostile_config(number))
    result, config = outcome(lambda: store.read_config(tmp_path), (CheckpointError,))
    if result == "ok":
        assert_config_is_sane(config)
    assert files_in(tmp_path) == {"config.json"}


def test_an_oversized_config_is_refused_before_it_is_parsed(tmp_path):
    (tmp_path / "config.json").write_bytes(b" " * (17 * 2**20) + b"{}")
    result, message = outcome(lambda: store.read_config(tmp_path), (CheckpointError,))
    assert result == "error" and "bytes, over" in message


@pytest.mark.parametrize("number", cases(80))
def test_a_hostile_timm_config_gives_bounded_preprocessing_or_one_line(number):
    rng = random.Random(number)
    pretrained = {"input_size": rng.choice([[3, 299, 299], [3, 100000, 100000], [3, "a", 1],
                                            [3, 299.5, 299.5], 299, [3, 0, 0], [3, True, True]]),
                  "crop_pct": rng.choice([0.875, 1e-300, 0, -1, 2, "x", float("nan")]),
                  "interpolation": rng.choice(["bicubic", "cubic", 3, None]),
                  "mean": rng.choice([[0.5] * 3, [0.5], "x", 5, [float("inf")] * 3]),
                  "std": rng.choice([[0.5] * 3, [0, 0, 0], [-1, 1, 1], None])}
    for key in rng.sample(list(pretrained), rng.randint(0, 3)):
        del pretrained[key]
    data = {"pretrained_cfg": pretrained, "label_names": rng.choice([None, 3, ["a"], ["x"] * 10])}
    result, config = outcome(lambda: registry.config_from_timm(data), (CheckpointError,))
    if result == "ok":
        assert 1 <= config.preprocessing.crop_size <= MAX_IMAGE_SIDE
        assert 1 <= config.preprocessing.resize_size <= MAX_IMAGE_SIDE


# --------------------------------------------------------------------------------------------
# Checkpoint files


def hostile_state(number: int, torch):
    """Return (state_dict, whether a reader must accept it) for checkpoint ``number``."""
    rng = random.Random(number)
    state, good = {}, True
    for index in range(rng.randint(1, 4)):
        key = rng.choice(["fc.weight", "fc.bias", f"Mixed_5b.branch1x1.conv.weight{index}",
                          "bn.num_batches_tracked", 3, (1, 2), "", "k" * 300])
        kind = rng.choice(["float32", "float16", "bfloat16", "float64", "int32", "int64", "bool",
                           "complex64", "uint8", "float8_e4m3fn", "float8_e5m2", "qint8",
                           "sparse", "meta", "number", "text", "nested"])
        if kind in ("float32", "float16", "bfloat16", "float64", "int32", "int64", "bool",
                    "complex64", "uint8", "float8_e4m3fn", "float8_e5m2"):
            value = torch.zeros(2, 3).to(getattr(torch, kind))
            allowed = kind.startswith(("float1", "float3", "float6", "bfloat")) or (
                isinstance(key, str) and key.endswith("num_batches_tracked")
                and kind in ("int32", "int64", "uint8"))
        elif kind == "qint8":
            value = torch.quantize_per_tensor(torch.zeros(2, 3), 0.1, 0, torch.qint8)
            allowed = False
        elif kind == "sparse":
            value, allowed = torch.zeros(2, 3).to_sparse(), False
        elif kind == "meta":
            value, allowed = torch.zeros(2, 3, device="meta"), False
        else:
            value = {"number": 7, "text": "weights", "nested": {"a": torch.zeros(1)}}[kind]
            allowed = False
        good = good and allowed and isinstance(key, str)
        state[key] = value
    if rng.random() < 0.2:
        state = {"state_dict": state}
    return state, good


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's notes on quantized tensors
@pytest.mark.parametrize("number", cases(120))
def test_a_hostile_checkpoint_is_read_or_refused_in_one_line(number, tmp_path):
    torch = pytest.importorskip("torch")
    state, good = hostile_state(number, torch)
    path = tmp_path / "model.pth"
    torch.save(state, path)
    result, read = outcome(lambda: convert.read_state_dict(path), (CheckpointError,))
    assert result == ("ok" if good else "error"), (state, read)
    if result == "ok":
        assert all(v.dtype in (mx.float16, mx.bfloat16, mx.float32) or k.endswith(
            "num_batches_tracked") for k, v in read.items())
    out = tmp_path / "out"
    result, _ = outcome(lambda: convert.convert_checkpoint(path, out), (CheckpointError,))
    assert result == "error"  # none of these is a whole Inception-v3
    assert files_in(tmp_path) == {"model.pth"}


@pytest.mark.parametrize("number", cases(60))
def test_a_hostile_safetensors_file_is_read_or_refused_in_one_line(number, tmp_path):
    rng = random.Random(number)
    path = tmp_path / "model.safetensors"
    dtype = rng.choice([mx.float32, mx.float16, mx.bfloat16, mx.int32, mx.bool_, mx.uint8,
                        mx.complex64, mx.int64])
    mx.save_safetensors(str(path), {"fc.weight": mx.zeros((2, 3), dtype=dtype)})
    good = dtype in (mx.float32, mx.float16, mx.bfloat16)
    if number % 3 == 1:  # damage the header or the data
        data = bytearray(path.read_bytes())
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        path.write_bytes(bytes(data))
        good = None  # may still read; then only its dtypes matter
    elif number % 3 == 2:  # a header length that claims the moon
        data = path.read_bytes()
        path.write_bytes(struct.pack("<Q", rng.choice([2**63, 2**40, 0, 7])) + data[8:])
        good = None
    result, read = outcome(lambda: convert.read_state_dict(path), (CheckpointError,))
    if good is not None:
        assert result == ("ok" if good else "error")
    if result == "ok":
        assert all(v.dtype in (mx.float16, mx.bfloat16, mx.float32) for v in read.values())
    assert files_in(tmp_path) == {"model.safetensors"}


@pytest.mark.parametrize("header", [b"[" * 10**5 + b"]" * 10**5,
                                    b'{"a":' * 10**5 + b"1" + b"}" * 10**5, b"{" * 10**6])
def test_a_deeply_nested_safetensors_header_is_one_line(header, tmp_path):
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    result, _ = outcome(lambda: convert.read_state_dict(path), (CheckpointError,))
    assert result == "error"


# --------------------------------------------------------------------------------------------
# A training run's state (what --resume reads)


def valid_state() -> dict:
    from mlx_inception.training.history import EpochTotals
    from mlx_inception.training.recipe import TrainConfig

    return {"format_version": 1, "epoch": 2, "step_in_epoch": 3, "step": 23,
            "best_val_top1": 0.5, "best_epoch": 2, "totals": EpochTotals().to_dict(),
            "seed": 0, "data_fingerprint": "0" * 16, "evaluated_weights": "trained",
            "metrics": [{"epoch": 1, "step": 10}, {"epoch": 2, "step": 20}],
            "config": TrainConfig(data="/data", out="/run").to_dict()}


STATE_VALUES = [-1, 0, 5, 10**20, 1.5, "3", None, True, [], {}, float("nan"), [{"step": 1}],
                [{"epoch": "1"}], {"loss": "x"}, {"images": -1}, {"colour": 1}]


def hostile_run(number: int, folder: Path) -> None:
    """Write checkpoint folder ``number`` whose trainer_state.json has been tampered with."""
    rng = random.Random(number)
    state = valid_state()
    for _ in range(rng.randint(1, 3)):
        key = rng.choice(["epoch", "step_in_epoch", "step", "best_val_top1", "best_epoch",
                          "totals", "config", "metrics", "seed", "format_version"])
        if rng.random() < 0.15:
            state.pop(key, None)
        elif key == "config" and rng.random() < 0.5:
            state["config"][rng.choice(["batch_size", "epochs", "lr", "colour"])] = rng.choice(
                STATE_VALUES)
        else:
            state[key] = rng.choice(STATE_VALUES)
    folder.mkdir()
    text = json.dumps(state) if number % 20 != 19 else nested(100000)
    (folder / run_state.TRAINER_STATE).write_text(text)
    mx.save_safetensors(str(folder / run_state.TRAINING_STATE), {"model/x": mx.zeros((1,))})
    (folder / store.CONFIG_FILE).write_text(json.dumps(InceptionV3Config().to_dict()))


def make_run(number: int, run_dir: Path) -> None:
    folder = run_dir / "checkpoints" / "step-00000023"
    folder.parent.mkdir()
    hostile_run(number, folder)
    (run_dir / "last").symlink_to(os.path.relpath(folder, run_dir))


def resume(run_dir: Path):
    """Read a run back as ``--resume`` does, up to the arrays; return its progress."""
    config, network, arrays, state = run_state.resume_point(run_dir)
    return run_state.progress_from_state(state, steps_per_epoch=10)


@pytest.mark.parametrize("number", cases(120))
def test_a_tampered_run_state_resumes_or_is_refused_in_one_line(number, tmp_path):
    from mlx_inception.training.recipe import ConfigError

    make_run(number, tmp_path)
    before = files_in(tmp_path)
    result, progress = outcome(lambda: resume(tmp_path), (CheckpointError, ConfigError))
    if result == "ok":
        assert all(isinstance(v, int) and v >= 0
                   for v in (progress.epoch, progress.step_in_epoch, progress.step))
        assert progress.step_in_epoch <= min(10, progress.step)
    assert files_in(tmp_path) == before


@pytest.fixture(scope="module")
def small_trainee():
    from mlx_inception.model import InceptionV3
    from mlx_inception.training.optim import TFRMSProp

    model = InceptionV3(InceptionV3Config(num_classes=2, labels=None))
    optimizer = TFRMSProp(0.1, 0.9, 0.9, 1.0)
    optimizer.init(model.trainable_parameters())
    arrays = run_state.checkpoint_arrays(model, optimizer, {})
    return model, optimizer, arrays


@pytest.mark.parametrize("number", cases(30))
def test_an_optimizer_slot_that_does_not_fit_is_refused(number, small_trainee):
    model, optimizer, arrays = small_trainee
    rng = random.Random(number)
    arrays = dict(arrays)
    slot = rng.choice(sorted(k for k in arrays if k.startswith("optimizer/") and "." in k))
    change = rng.choice(["shape", "drop", "extra", "dtype"])
    if change == "shape":
        arrays[slot] = mx.zeros(rng.choice([(1,), (), (3, 3)]))
    elif change == "drop":
        del arrays[slot]
    elif change == "extra":
        arrays["optimizer/extra.ms"] = mx.zeros((2,))
    else:
        arrays[slot] = mx.zeros(arrays[slot].shape, dtype=mx.int32)
    saved_state = optimizer.state
    result, message = outcome(lambda: run_state.restore_arrays(arrays, model, optimizer, {}),
                              (CheckpointError,))
    assert result == "error" and ("optimizer" in message)
    assert optimizer.state is saved_state  # nothing half-restored


def test_debris_of_killed_saves_is_pruned_and_nothing_else(tmp_path):
    parent = tmp_path / "checkpoints"
    parent.mkdir()
    for name in ["step-00000001", "step-00000002", ".step-00000002-123-abcdefgh",
                 "..step-00000002-abcdefgh-ijklmnop", ".step-00000003-xyz_1234", "mine",
                 ".hidden", "step-1"]:
        (parent / name).mkdir()
    run_state.point(tmp_path, "last", parent / "step-00000002")
    run_state.prune(tmp_path)
    assert sorted(p.name for p in parent.iterdir()) == [".hidden", "mine", "step-00000002",
                                                         "step-1"]


# --------------------------------------------------------------------------------------------
# FID statistics


def hostile_statistics(number: int, path: Path) -> bool | None:
    """Write statistics file ``number``; return whether it must be accepted (None: either)."""
    rng = random.Random(number)
    generator = np.random.default_rng(number)
    dims = rng.choice([1, 2, 8, 16])
    features = generator.normal(size=(rng.choice([3, 40]), dims))
    mu, sigma = features.mean(axis=0), np.cov(features, rowvar=False).reshape(dims, dims)
    good: bool | None = True
    change = rng.choice(["none", "dtype", "shape", "nan", "negative", "asymmetric", "bool",
                         "text", "claimed", "complex", "scalar"])
    if change == "dtype":
        mu, sigma = mu.astype(np.float32), sigma.astype(np.float32)
    elif change == "shape":
        sigma, good = np.zeros((dims, dims + 1)), False
    elif change == "nan":
        sigma = sigma.copy()
        sigma[0, 0], good = rng.choice([np.nan, np.inf]), False
    elif change == "negative":
        sigma, good = -sigma - np.eye(dims), False
    elif change == "asymmetric":
        sigma, good = sigma + np.triu(np.ones((dims, dims)), 1), dims == 1
    elif change == "bool":
        mu, good = mu > 0, True
    elif change == "text":
        mu, good = np.array(["a"] * dims), False
    elif change == "complex":
        sigma, good = sigma.astype(np.complex128), False
    elif change == "scalar":
        mu, good = np.float64(1.0), False
    np.savez(path, mu=mu, sigma=sigma)
    if change == "claimed":  # a header that claims a 100000 x 100000 sigma over no data
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                      "shape": (100000, 100000)})
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("mu.npy", _npy(mu))
            archive.writestr("sigma.npy", header.getvalue())
        good = False
    return good


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("number", cases(100))
def test_hostile_statistics_give_a_distance_or_one_line(number, tmp_path):
    path = tmp_path / "stats.npz"
    good = hostile_statistics(number, path)
    result, statistics = outcome(lambda: FeatureStatistics.load(path), (DataError,))
    if good is not None:
        assert result == ("ok" if good else "error")
    if result == "ok":
        assert frechet_distance(statistics, statistics) == pytest.approx(0, abs=1e-6)
        assert np.linalg.eigvalsh(statistics.sigma)[0] > -1e-6 * max(
            1.0, np.abs(statistics.sigma).max())
    assert files_in(tmp_path) == {"stats.npz"}


# --------------------------------------------------------------------------------------------
# Kills at random moments of a conversion


KILLED_CONVERT = """
import sys
import mlx_inception
from mlx_inception.checkpoints.convert import convert_checkpoint
print("ready", flush=True)
convert_checkpoint(sys.argv[1], sys.argv[2])
"""


@pytest.mark.slow
@pytest.mark.parametrize("number", range(6))
def test_a_convert_killed_at_any_moment_leaves_a_loadable_folder_and_no_debris(
    number, reference_checkpoints, tmp_path
):
    rng = random.Random(number)
    out = tmp_path / "new"
    if number % 2:  # converting over an existing copy: that copy must survive whole
        convert.convert_checkpoint(reference_checkpoints["pth"], out)
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_CONVERT, str(reference_checkpoints["safetensors"]),
         str(out)], stdout=subprocess.PIPE, env={**os.environ},
    )
    assert process.stdout.readline().strip() == b"ready"
    time.sleep(rng.uniform(0.0, 1.5))
    process.send_signal(signal.SIGKILL)
    process.wait()
    if out.exists():
        store.load_weights(out)  # whole: the old copy or the new one
    # The next run (a process started after the kill) removes what the killed one left.
    subprocess.run([sys.executable, "-c", KILLED_CONVERT, str(reference_checkpoints["pth"]),
                    str(out)], check=True, capture_output=True)
    assert [p.name for p in tmp_path.iterdir()] == ["new"]
    store.load_weights(out)


# --------------------------------------------------------------------------------------------
# A tally over every case: `python tests/test_fuzz.py`


def _tally() -> None:  # pragma: no cover - a report, not a test
    """Run every generated case of the tests above and print how many end in each outcome."""
    import tempfile
    from collections import Counter

    counts: Counter = Counter()
    tests = {
        "images": (240, test_a_hostile_image_decodes_or_fails_in_one_line),
        "configs": (150, test_a_hostile_config_is_read_or_refused_in_one_line),
        "timm configs": (80, lambda n, d: test_a_hostile_timm_config_gives_bounded_preprocessing_or_one_line(n)),  # noqa: E501
        "pickles": (120, test_a_hostile_checkpoint_is_read_or_refused_in_one_line),
        "safetensors": (60, test_a_hostile_safetensors_file_is_read_or_refused_in_one_line),
        "run states": (120, test_a_tampered_run_state_resumes_or_is_refused_in_one_line),
        "statistics": (100, test_hostile_statistics_give_a_distance_or_one_line),
    }
    for name, (count, test) in tests.items():
        for number in range(count):
            with tempfile.TemporaryDirectory() as folder:
                OUTCOMES.clear()
                try:
                    test(number, Path(folder))
                except AssertionError:
                    counts[(name, "failed its checks")] += 1
                    continue
                except Exception as error:
                    counts[(name, f"traceback ({type(error).__name__})")] += 1
                    continue
                first = OUTCOMES[0] if OUTCOMES else "?"
                counts[(name, "one-line error" if first == "error" else "right result")] += 1
    for (name, result), count in sorted(counts.items()):
        print(f"| {name} | {result} | {count} |")


if __name__ == "__main__":  # pragma: no cover
    import warnings

    warnings.simplefilter("ignore")
    _tally()


# --------------------------------------------------------------------------------------------
# The edges: names, links, seeds, output encodings, offline advice


def test_the_thin_png_of_a_hundred_bytes_is_refused_before_it_grows(tmp_path):
    path = tmp_path / "thin.png"
    Image.new("L", (1, 6000)).save(path, optimize=True)
    assert path.stat().st_size < 200
    result, message = outcome(lambda: preprocess(load_image(path)), (ImageError,))
    assert result == "error" and "too elongated" in message


def test_impossible_names_are_one_line():
    import mlx_inception

    for name in ("a" * 5000, "ok\x00", "dir/" + "a" * 300):
        result, message = outcome(lambda name=name: mlx_inception.load(name), (CheckpointError,))
        assert result == "error" and len(message) < 800
    result, message = outcome(lambda: load_image("ok\x00.jpg"), (ImageError,))
    assert result == "error" and "NUL" in message


def test_a_link_to_the_data_root_inside_a_class_files_nothing_under_it(tmp_path):
    from mlx_inception.data.folder import ImageFolder

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / f"{name}.png")
    (tmp_path / "cat" / "everything").symlink_to(tmp_path)
    (tmp_path / "cat" / "borrowed.png").symlink_to(tmp_path / "dog" / "dog.png")
    outside = tmp_path.parent / f"{tmp_path.name}-pool"
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(outside / "pooled.png")
    (tmp_path / "cat" / "pool").symlink_to(outside)  # outside the data set: followed
    folder = ImageFolder(tmp_path)
    assert [(p.name, label) for p, label in folder.samples] == [
        ("cat.png", 0), ("pooled.png", 0), ("dog.png", 1)]
    assert len(folder.skipped) == 2 and all("skipped" in line for line in folder.skipped)


def test_a_seed_beyond_64_bits_is_one_line(tmp_path, capsys):
    from mlx_inception.cli import main

    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"),
                 "--seed", str(2**64)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seed must be below 2**64" in err


def test_offline_with_nothing_cached_says_what_works_offline():
    from huggingface_hub.errors import OfflineModeIsEnabled

    from mlx_inception.checkpoints.hub_client import hub_error

    message = str(hub_error(OfflineModeIsEnabled(), repo_id="a/b", endpoint="https://x"))
    assert "local checkpoint file" in message and "mlx-inception convert" in message
    assert "set HF_HUB_OFFLINE=1" not in message


@pytest.mark.slow
def test_predict_reports_a_name_that_is_not_utf8_under_a_strict_stdout(tmp_path):
    from mlx_inception.checkpoints.store import save_model
    from mlx_inception.model import InceptionV3, Preprocessing

    small = Preprocessing(resize_size=86, crop_size=75)
    save_model(InceptionV3(InceptionV3Config(num_classes=3, labels=None, aux_logits=False,
                                             preprocessing=small)), tmp_path / "weights")
    images = tmp_path / "images"
    images.mkdir()
    for name in (b"bad\xff.png", b"ok.png"):
        Image.new("RGB", (80, 80)).save(os.path.join(os.fsencode(images), name))
    result = subprocess.run(
        [sys.executable, "-m", "mlx_inception", "predict", str(images), "--weights",
         str(tmp_path / "weights"), "--top-k", "1"],
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"}, capture_output=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert b"bad\\udcff.png" in result.stdout and b"ok.png" in result.stdout
