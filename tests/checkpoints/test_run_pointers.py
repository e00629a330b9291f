"""`mlx_inception.load` follows what a training run writes: RUN_DIR/best and RUN_DIR/last as
symbolic links or, where the file system has none, as one-line pointer files; and RUN_DIR itself.

The links are written by the trainer's own ``point`` (file systems without symbolic links are
simulated by making ``os.symlink`` fail, as it does on exFAT). The two checkpoints differ only in
``fc.bias`` (all 1 in the first, all 2 in the second), which says which one was loaded.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mlx.core as mx
import pytest

import mlx_inception
from mlx_inception.checkpoints import store
from mlx_inception.errors import CheckpointError
from mlx_inception.model import InceptionV3, InceptionV3Config
from mlx_inception.training import checkpoint


@pytest.fixture(scope="module")
def saved_weights(module_tmp) -> dict[str, Path]:
    """Two small-classifier weights directories, fc.bias all 1 ("first") and all 2 ("second")."""
    config = InceptionV3Config(num_classes=3, aux_logits=False, labels=["a", "b", "c"])
    weights = store.model_weights(InceptionV3(config, init_weights=False))
    root = module_tmp("weights")
    folders = {}
    for name, bias in (("first", 1.0), ("second", 2.0)):
        weights["fc.bias"] = mx.full((3,), bias)
        # float16 halves what is written; load() builds in float32 either way.
        folders[name] = store.save_weights(root / name, weights, config, dtype="float16")
    return folders


def make_run(run_dir: Path, saved_weights: dict[str, Path], best: bool = True) -> Path:
    """A run directory as the trainer leaves it: the checkpoint folders and last (and best)."""
    steps = {}
    for step, name in enumerate(("first", "second"), start=1):
        steps[name] = run_dir / checkpoint.CHECKPOINTS / f"step-{step:08d}"
        # Hard links: the run is laid out without copying the weights again.
        shutil.copytree(saved_weights[name], steps[name], copy_function=os.link)
    if best:
        checkpoint.point(run_dir, "best", steps["first"])
    checkpoint.point(run_dir, "last", steps["second"])
    return run_dir


def without_symlinks(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", refuse)


def fc_bias(model: InceptionV3) -> float:
    return float(model.fc.bias[0].item())


def test_a_pointer_file_to_a_checkpoint_loads(saved_weights, tmp_path, monkeypatch):
    without_symlinks(monkeypatch)
    run = make_run(tmp_path / "run", saved_weights)
    assert (run / "best").is_file() and not (run / "best").is_symlink()
    assert fc_bias(mlx_inception.load(run / "best")) == 1.0
    assert fc_bias(mlx_inception.load(str(run / "last"))) == 2.0


def test_a_symbolic_link_to_a_checkpoint_loads(saved_weights, tmp_path):
    run = make_run(tmp_path / "run", saved_weights)
    assert (run / "best").is_symlink()
    model = mlx_inception.load(run / "best")
    assert fc_bias(model) == 1.0
    assert model.config.labels == ["a", "b", "c"]


def test_a_run_directory_loads_its_best_checkpoint(saved_weights, tmp_path, monkeypatch):
    without_symlinks(monkeypatch)
    run = make_run(tmp_path / "run", saved_weights)
    assert fc_bias(mlx_inception.load(run)) == 1.0


def test_a_run_without_validation_loads_its_last_checkpoint(saved_weights, tmp_path):
    run = make_run(tmp_path / "run", saved_weights, best=False)
    assert fc_bias(mlx_inception.load(run)) == 2.0


def test_a_pointer_to_a_missing_checkpoint_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best").write_text("checkpoints/step-00000007\n")
    with pytest.raises(CheckpointError, match=r"best points to .*step-00000007, which does not "
                       r"exist") as error:
        mlx_inception.load(run / "best")
    assert "\n" not in str(error.value)
    # Through the run directory too: the error names the pointer, not the directory.
    with pytest.raises(CheckpointError, match=r"best points to .*step-00000007"):
        mlx_inception.load(run)


def test_a_dangling_symbolic_link_is_refused_in_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    os.symlink("checkpoints/step-00000007", run / "last")
    with pytest.raises(CheckpointError, match=r"last links to .*step-00000007, which does not "
                       r"exist") as error:
        mlx_inception.load(run / "last")
    assert "\n" not in str(error.value)


def test_a_runs_missing_best_is_reported_with_its_last_not_looked_up_on_the_hub(
    saved_weights, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a Hub request would fail
    run = make_run(tmp_path / "runA", saved_weights, best=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as error:
        mlx_inception.load("runA/best")  # shaped like a Hub repo id, owner/name
    assert str(error.value) == (
        "runA/best does not exist: the run runA has no best checkpoint yet (best is marked "
        "when the run evaluates a validation set); use runA/last")
    assert fc_bias(mlx_inception.load(run / "last")) == 2.0
