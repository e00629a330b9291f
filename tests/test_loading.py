"""`mlx_inception.load`: one entry point for every kind of weights, with clear refusals."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import random_images, real_photos

import mlx_inception
from mlx_inception.checkpoints.convert import convert_checkpoint
from mlx_inception.errors import CheckpointError


@pytest.fixture(scope="module")
def converted_dir(reference_checkpoints, module_tmp):
    out, _ = convert_checkpoint(reference_checkpoints["pth"], module_tmp("w") / "m")
    return out


def test_directory_and_raw_checkpoint_give_the_same_model(converted_dir, reference_checkpoints):
    x = mx.array(random_images((1, 107, 107, 3), seed=12))
    from_dir = mlx_inception.load(converted_dir)
    from_file = mlx_inception.load(reference_checkpoints["safetensors"])
    np.testing.assert_array_equal(np.array(from_dir(x)), np.array(from_file(x)))
    assert from_dir.training is False
    assert from_dir.config.preprocessing.crop_size == 299
    assert from_dir.config.source["file"] == "inception_v3_reference.pth"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_folds_batchnorm_and_stays_close(calibrated_weights_dir, dtype):
    x = mx.array(real_photos(299, 4))
    reference = np.array(mlx_inception.load(calibrated_weights_dir)(x))
    model = mlx_inception.load(calibrated_weights_dir, dtype=dtype)
    assert "bn" not in model.Mixed_5b.branch1x1
    assert model.Mixed_5b.branch1x1.conv.weight.dtype == getattr(mx, dtype)
    logits = np.array(model(x.astype(getattr(mx, dtype))).astype(mx.float32))
    # Rounding to 11 (float16) or 8 (bfloat16) mantissa bits at each of 94 layers of a random
    # network: measured max|diff| / max|logit| about 0.02 and 0.08-0.13; asserted 0.05 and 0.2.
    # BatchNorm folding itself is exact in float32 (about 1e-5, like the unfolded model).
    tolerance = 0.2 if dtype == "bfloat16" else 0.05
    assert np.max(np.abs(logits - reference)) <= tolerance * np.max(np.abs(reference))
    if dtype == "float16":
        np.testing.assert_array_equal(logits.argmax(1), reference.argmax(1))


def test_config_override_changes_how_a_raw_checkpoint_is_built(reference_checkpoints):
    config = mlx_inception.InceptionV3Config(transform_input=True)
    model = mlx_inception.load(reference_checkpoints["pth"], config=config)
    assert model.config.transform_input is True


def test_a_directory_without_config_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is not a weights directory"):
        mlx_inception.load(tmp_path)


def test_a_broken_config_is_refused(converted_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes((converted_dir / "model.safetensors").read_bytes())
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="is not a valid config"):
        mlx_inception.load(broken)


def test_weights_that_do_not_fit_the_config_are_refused(converted_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes((converted_dir / "model.safetensors").read_bytes())
    (other / "config.json").write_text('{"num_classes": 10}')
    with pytest.raises(CheckpointError, match="mis-shaped 4"):
        mlx_inception.load(other)


def test_unknown_dtype_is_refused(converted_dir):
    with pytest.raises(CheckpointError, match="unknown dtype 'float8'"):
        mlx_inception.load(converted_dir, dtype="float8")


def test_a_weights_directorys_own_model_safetensors_loads_as_the_directory(converted_dir):
    # It holds MLX-layout weights beside its config.json: converting it again as a PyTorch
    # file would transpose every convolution a second time.
    x = mx.array(random_images((1, 75, 75, 3), seed=3))
    from_file = mlx_inception.load(converted_dir / "model.safetensors")
    from_dir = mlx_inception.load(converted_dir)
    np.testing.assert_array_equal(np.array(from_file(x)), np.array(from_dir(x)))
    assert from_file.config.source["file"] == "inception_v3_reference.pth"


def test_this_projects_weights_file_without_its_config_is_refused_in_one_line(
    converted_dir, tmp_path
):
    alone = tmp_path / "model.safetensors"
    alone.write_bytes((converted_dir / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError) as error:
        mlx_inception.load(alone)
    assert str(error.value) == (
        f"{alone} holds weights in mlx-inception's format, which load from their folder: keep "
        "it as model.safetensors beside its config.json and pass the folder")


@pytest.fixture
def no_hub(monkeypatch):
    """Any Hub request would fail: nothing listens on port 9 (discard) of this machine."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_a_missing_path_in_a_local_folder_is_reported_not_looked_up_on_the_hub(
    tmp_path, monkeypatch, no_hub
):
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    # "runs/pets" has the shape of a Hub repo id (owner/name), but runs/ is a folder here.
    with pytest.raises(CheckpointError) as error:
        mlx_inception.load("runs/pets")
    assert str(error.value) == (
        "runs/pets does not exist (and runs is a local folder, so it was not looked up on the "
        "Hub): check the path, or run `mlx-inception download runs/pets` first to use the Hub "
        "repo of that name")
