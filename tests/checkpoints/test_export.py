"""Export back to PyTorch: MLX weights -> a torchvision state dict that ``inception_v3`` loads
with ``strict=True`` and that gives the MLX model's logits.

The network is torchvision's init with BatchNorm statistics measured on real photos
(``calibrated_weights_dir``): with arbitrary statistics, activations reach 1e10 and a
comparison of logits would say little. Images are 107 px, enough for every layer.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from conftest import RELATIVE_TOLERANCE, assert_close, real_photos

import mlx_inception
from mlx_inception import InceptionV3, InceptionV3Config
from mlx_inception.checkpoints import store
from mlx_inception.checkpoints.export import export_weights, torchvision_state_dict
from mlx_inception.cli import main as cli_main
from mlx_inception.errors import CheckpointError


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return real_photos(107, 3)


@pytest.fixture(scope="module")
def seeded_weights_dir(module_tmp):
    """A seeded 10-class network with its aux head, for the tests that need no torch."""
    mx.random.seed(0)
    return store.save_model(InceptionV3(InceptionV3Config(num_classes=10, labels=None)),
                            module_tmp("seeded") / "weights")


def torchvision_logits(path, photos, **options) -> np.ndarray:
    """Load an exported file into torchvision's inception_v3 (strict) and run it on photos."""
    torch = pytest.importorskip("torch")
    from torchvision.models import inception_v3

    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), weights_only=True)
    model = inception_v3(weights=None, init_weights=False, **options)
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        inputs = torch.from_numpy(photos.transpose(0, 3, 1, 2).copy())
        return model.float().eval()(inputs).numpy()


def mlx_logits(weights_dir, photos) -> np.ndarray:
    model = mlx_inception.load(weights_dir, dtype=mx.float32)
    return np.array(model(mx.array(photos)).astype(mx.float32))


def test_export_writes_torchvisions_layout_and_batchnorm_counters(seeded_weights_dir, tmp_path):
    out, notes = export_weights(seeded_weights_dir, tmp_path / "model.safetensors")
    state = mx.load(str(out))
    weights, _ = store.load_weights(seeded_weights_dir)
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)  # OIHW
    assert state["Mixed_5b.branch5x5_2.conv.weight"].shape == (64, 48, 5, 5)
    key = "Mixed_5b.branch5x5_2.conv.weight"
    assert np.array_equal(np.array(state[key]), np.array(weights[key]).transpose(0, 3, 1, 2))
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert len(counters) == sum(k.endswith("running_var") for k in weights)
    assert state[counters[0]].dtype == mx.int64
    assert any("aux_logits=True" in note and "strict=True" in note for note in notes)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_exported_weights_load_strictly_into_torchvision_and_give_the_same_logits(
    calibrated_weights_dir, tmp_path, photos, suffix
):
    out, _ = export_weights(calibrated_weights_dir, tmp_path / f"model{suffix}")
    expected = mlx_logits(calibrated_weights_dir, photos)
    # float32 in another order of operations: RELATIVE_TOLERANCE (1e-4 of the largest logit).
    assert_close(torchvision_logits(out, photos, num_classes=1000, aux_logits=True), expected,
                 "logits", RELATIVE_TOLERANCE)


@pytest.mark.slow
def test_a_fine_tuned_model_with_new_classes_and_no_aux_head_round_trips(
    calibrated_weights_dir, tmp_path, photos
):
    weights, _ = store.load_weights(calibrated_weights_dir)
    mx.random.seed(3)
    config = InceptionV3Config(num_classes=5, aux_logits=False, labels=list("abcde"))
    head = InceptionV3(config)  # a new head, as fine-tuning on 5 classes leaves it
    weights = {k: v for k, v in weights.items() if not k.startswith("AuxLogits")}
    weights["fc.weight"], weights["fc.bias"] = head.fc.weight * 100, head.fc.bias + 0.5
    store.save_weights(tmp_path / "tuned", weights, config)
    assert cli_main(["export", str(tmp_path / "tuned"), str(tmp_path / "tuned.pth")]) == 0
    assert_close(torchvision_logits(tmp_path / "tuned.pth", photos, num_classes=5,
                                    aux_logits=False),
                 mlx_logits(tmp_path / "tuned", photos), "logits", RELATIVE_TOLERANCE)


@pytest.mark.slow
def test_a_half_precision_model_exports_as_half_precision(calibrated_weights_dir, tmp_path,
                                                          photos):
    weights, config = store.load_weights(calibrated_weights_dir)
    store.save_weights(tmp_path / "half", weights, config, dtype="float16")
    out, _ = export_weights(tmp_path / "half", tmp_path / "half.safetensors")
    state = mx.load(str(out))
    assert state["fc.weight"].dtype == mx.float16
    assert state["Mixed_7c.branch1x1.bn.running_var"].dtype == mx.float32  # kept, as stored
    # torchvision in float32 from the float16 weights; MLX the same, upcast: both compute in
    # float32 from identical values, so the float32 tolerance applies.
    upcast = {k: v.astype(mx.float32) for k, v in store.load_weights(tmp_path / "half")[0].items()}
    store.save_weights(tmp_path / "upcast", upcast, config)
    assert_close(torchvision_logits(out, photos, num_classes=1000, aux_logits=True),
                 mlx_logits(tmp_path / "upcast", photos), "logits", RELATIVE_TOLERANCE)


def test_a_variant_torchvision_cannot_build_is_refused_in_one_line():
    config = InceptionV3Config(stem="151")
    with pytest.raises(CheckpointError, match="stem='151'.*only torchvision's own network"):
        torchvision_state_dict({}, config)


def test_export_refuses_what_it_cannot_write_and_leaves_nothing(seeded_weights_dir, tmp_path,
                                                               capsys):
    with pytest.raises(CheckpointError, match=r"\.safetensors or \.pth"):
        export_weights(seeded_weights_dir, tmp_path / "model.npz")
    with pytest.raises(CheckpointError, match="is not MLX weights"):
        export_weights(tmp_path, tmp_path / "model.safetensors")
    assert cli_main(["export", str(tmp_path / "missing"), str(tmp_path / "x.pth")]) == 1
    assert "no such run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_previous_export(seeded_weights_dir, tmp_path, monkeypatch):
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"previous export")

    def fail(path, arrays, metadata=None):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("[save_safetensors] short write")

    monkeypatch.setattr(mx, "save_safetensors", fail)
    with pytest.raises(CheckpointError, match="cannot write .*model.safetensors"):
        export_weights(seeded_weights_dir, out)
    assert out.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
