"""The GPU path, run on whatever device the tests use: what a GPU computes, checked in CI.

On a GPU the package installs none of its CPU kernels (they fall back to the model's code there),
compiles the training step and the fast inference path, and runs the paper's forward pass of
``mlx_inception/model/``. Here the same code runs on the CPU: ``MLX_INCEPTION_CPU_KERNELS=0``
for the whole module (checked: every layer is the model's own class) and ``mx.compile`` on.
With ``MLX_INCEPTION_TEST_DEVICE=gpu`` the same tests run on the GPU itself.

Tolerances, each relative to the reference's largest magnitude:

- against torchvision, float32 summed in another order: 1e-4 in eval mode, 1e-3 in training
  mode (a batch of two's BatchNorm divides by small standard deviations, amplifying rounding),
  the same as ``tests/test_model_parity.py``; gradients no farther from torchvision in float64
  than twice torchvision's own float32 ones;
- compiled against eager: ``mx.compile`` fuses element-wise operations into one kernel, which
  may round differently (fused multiply-add, another ``exp``), never another algorithm; 1e-5 of
  each array's update after two training steps, 1e-5 for the inference outputs (measured on
  the CPU: bit-identical and 1e-7 respectively, see docs/testing.md).

The compiled full training step is the costliest test in the suite (compiling on the CPU takes
1-2 minutes on two cores); one module fixture compiles it once for every check.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from conftest import (
    TRAINING_TOLERANCE,
    assert_close,
    assert_gradients_as_accurate_as_torchs,
    real_photos,
    torch_grad_cam,
)
from mlx.utils import tree_flatten
from PIL import Image

import mlx_inception
from mlx_inception import InceptionV3, InceptionV3Config, kernels
from mlx_inception.cli import main as cli_main
from mlx_inception.fast import fast_model
from mlx_inception.inference.gradcam import grad_cam
from mlx_inception.training.network import set_training_mode
from mlx_inception.training.recipe import resolve
from mlx_inception.training.step import dropout_keys, make_train_step
from mlx_inception.training.trainer import Trainer

torch = pytest.importorskip("torch")

# Compiled against eager (see the module docstring).
COMPILED_TOLERANCE = 1e-5


@pytest.fixture(scope="module", autouse=True)
def cpu_kernels_off():
    """The whole module runs with the CPU kernels switched off, as a GPU runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(kernels.ENVIRONMENT_VARIABLE, "0")
        yield


def kernel_classes(model: nn.Module) -> list[str]:
    """Return the names of the classes in ``model`` that come from ``mlx_inception.kernels``."""
    return sorted({type(module).__qualname__ for _, module in model.named_modules()
                   if type(module).__module__.startswith("mlx_inception.kernels")})


def model_classes(model: nn.Module) -> set[str]:
    """Return the modules every class of ``model`` is defined in."""
    return {type(module).__module__ for _, module in model.named_modules()}


def assert_plain(model: nn.Module) -> None:
    assert not kernel_classes(model), kernel_classes(model)
    assert model_classes(model) <= {
        "mlx_inception.model.layers", "mlx_inception.model.blocks",
        "mlx_inception.model.inception_v3", "mlx_inception.training.step",
        *(name for name in model_classes(model) if name.startswith("mlx.nn.")),
    }, model_classes(model)


@pytest.fixture(scope="module")
def plain(calibrated_weights_dir):
    """The calibrated network as ``mlx_inception.load`` builds it with the kernels off."""
    return mlx_inception.load(calibrated_weights_dir)


@pytest.fixture(scope="module")
def photos_299():
    """Two real photos (chelsea, coffee) at 299 px, ImageNet-normalised, NHWC."""
    return real_photos(299, 2)


@pytest.mark.slow
def test_the_gpu_switch_runs_the_tests_on_the_gpu_or_stops_in_one_line():
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_workflows.py",
         "-k", "first_command"],
        cwd=root, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MLX_INCEPTION_TEST_DEVICE": "gpu"},
    )
    if mx.is_available(mx.gpu):
        assert result.returncode == 0, result.stdout + result.stderr
    else:  # pytest's usage error: nothing ran, and the line says why and what to install
        assert result.returncode == 4, result.stdout + result.stderr
        [line] = [line for line in result.stderr.splitlines() if line.strip()]
        assert line.startswith("ERROR: MLX_INCEPTION_TEST_DEVICE=gpu, but this MLX")
        assert "has no GPU backend" in line and '.[cuda]' in line


def test_with_the_switch_off_every_layer_is_the_models_own_class(monkeypatch):
    # kernels.install is how load, the trainer and bench add the kernels (the slow tests below
    # check their models too).
    def installed():
        return kernels.install(InceptionV3(InceptionV3Config(num_classes=10), init_weights=False))

    assert_plain(installed())
    # The check sees the kernels when they are installed: the switch is what keeps them out.
    monkeypatch.setenv(kernels.ENVIRONMENT_VARIABLE, "1")
    assert {"BasicConv2d", "ShiftedConv2d", "StridedConv2d", "MaxPool2d"} <= set(
        kernel_classes(installed()))


@pytest.mark.slow
def test_eval_logits_match_torchvision_on_real_photos(plain, calibrated_model, photos_299):
    assert_plain(plain)
    with torch.no_grad():
        expected = calibrated_model(torch.from_numpy(photos_299.transpose(0, 3, 1, 2).copy()))
    logits = plain(mx.array(photos_299))
    assert_close(logits, expected.numpy(), "logits")
    np.testing.assert_array_equal(np.argsort(-np.asarray(logits), axis=-1)[:, :5],
                                  np.argsort(-expected.numpy(), axis=-1)[:, :5])


@pytest.fixture(scope="module")
def training_mode(calibrated_model, calibrated_weights_dir, photos_299):
    """Training-mode forward and backward (aux head, batch 2, 299 px, dropout off) of the
    calibrated network: MLX with the kernels off, torchvision in float32 and in float64."""
    reference = copy.deepcopy(calibrated_model)  # training mode moves its statistics
    reference.zero_grad(set_to_none=True)  # Grad-CAM tests leave gradients on the original
    reference.dropout.p = 0.0  # the frameworks' dropout draws differ
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.1  # calibration left a cumulative average; MLX's default is 0.1
    reference.train()
    reference64 = copy.deepcopy(reference).double()
    model = mlx_inception.load(calibrated_weights_dir)
    model.dropout = nn.Dropout(0.0)
    model.train()
    assert_plain(model)
    labels = np.array([281, 967])  # tabby cat, espresso: the photos' classes
    batch = torch.from_numpy(photos_299.transpose(0, 3, 1, 2).copy())
    torch_outputs = {}
    for net, dtype in ((reference, torch.float32), (reference64, torch.float64)):
        out = net(batch.to(dtype))
        target = torch.from_numpy(labels)
        loss = torch.nn.functional.cross_entropy(out.logits, target)
        (loss + 0.4 * torch.nn.functional.cross_entropy(out.aux_logits, target)).backward()
        torch_outputs[dtype] = out

    def loss_fn(m):
        logits, aux = m(mx.array(photos_299))
        loss_fn.outputs = (logits, aux)
        ce = nn.losses.cross_entropy
        return mx.mean(ce(logits, mx.array(labels))) + 0.4 * mx.mean(ce(aux, mx.array(labels)))

    _, grads = nn.value_and_grad(model, loss_fn)(model)
    return {"model": model, "outputs": loss_fn.outputs, "grads": dict(tree_flatten(grads)),
            "torch": reference, "torch64": reference64, "torch_outputs": torch_outputs[
                torch.float32]}


@pytest.mark.slow
def test_training_mode_outputs_and_statistics_match_torchvision(training_mode):
    logits, aux = training_mode["outputs"]
    expected = training_mode["torch_outputs"]
    assert_close(logits, expected.logits.detach().numpy(), "logits", TRAINING_TOLERANCE)
    assert_close(aux, expected.aux_logits.detach().numpy(), "aux_logits", TRAINING_TOLERANCE)
    model, reference = training_mode["model"], training_mode["torch"]
    for name in ("Conv2d_1a_3x3.bn", "Mixed_6e.branch7x7dbl_5.bn", "Mixed_7c.branch_pool.bn"):
        ours, theirs = model, reference
        for part in name.split("."):
            ours, theirs = getattr(ours, part), getattr(theirs, part)
        assert_close(ours.running_mean, theirs.running_mean.numpy(), f"{name}.running_mean",
                     TRAINING_TOLERANCE)
        assert_close(ours.running_var, theirs.running_var.numpy(), f"{name}.running_var",
                     TRAINING_TOLERANCE)


@pytest.mark.slow
def test_training_mode_gradients_are_as_accurate_as_torchvisions_own(training_mode):
    grads = training_mode["grads"]
    torch32 = dict(training_mode["torch"].named_parameters())
    torch64 = dict(training_mode["torch64"].named_parameters())
    names = ["fc.weight", "AuxLogits.fc.weight", "AuxLogits.conv1.conv.weight",
             "Mixed_7c.branch_pool.conv.weight", "Mixed_6a.branch3x3.conv.weight",
             "Mixed_5b.branch5x5_2.conv.weight", "Mixed_5b.branch1x1.bn.weight",
             "Conv2d_2b_3x3.conv.weight", "Conv2d_1a_3x3.conv.weight"]
    assert_gradients_as_accurate_as_torchs(grads, torch32, torch64, names)


def write_photo_folder(root: Path, size: int) -> Path:
    """Write 4 real photos (scikit-image) as root/{animal,thing}/*.png, size x size."""
    from skimage import data

    for label, names in (("animal", ("chelsea", "horse")), ("thing", ("coffee", "rocket"))):
        (root / label).mkdir(parents=True)
        for name in names:
            image = Image.fromarray(getattr(data, name)()).convert("RGB")
            image.resize((size, size), Image.Resampling.BILINEAR).save(root / label / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def two_steps(module_tmp, photos_299):
    """Two training steps (aux head, 299 px, batch 2, the paper's recipe from scratch) of the
    trainer's own step, eagerly and ``mx.compile``-d as ``Trainer.fit`` compiles it: the
    loss, correct count and gradient norm of each, and every array of the state after them."""
    folder = write_photo_folder(module_tmp("photos") / "train", 320)
    images = mx.array(photos_299).reshape(1, 2, 299, 299, 3)  # one micro-batch of two
    labels = mx.array([[0, 1]])
    results = {}
    for compiled in (False, True):
        config, _ = resolve(dict(data=str(folder), out=str(module_tmp(f"run{compiled}") / "run"),
                              image_size=299, batch_size=2, val_split=0, workers=1,
                              compile=compiled, seed=3))
        trainer = Trainer(config, show_progress=False, log=lambda message: None)
        assert_plain(trainer.model)
        assert trainer.model.config.aux_logits
        set_training_mode(trainer.model, trainer.frozen)
        step = make_train_step(trainer.model, trainer.optimizer, trainer.ema, trainer.config,
                               trainer.group)
        if compiled:
            state = trainer.state()
            step = mx.compile(step, inputs=state, outputs=state)
        before = {k: np.array(v) for k, v in tree_flatten(trainer.model.parameters())}
        scalars = []
        for number in range(2):
            keys = dropout_keys(config.seed, number, 0, 1)
            loss, correct, norm = step(images, labels, keys)
            mx.eval(loss, correct, norm, trainer.state())
            scalars.append((loss.item(), correct.item(), norm.item()))
        after = {
            **{f"model.{k}": np.array(v) for k, v in tree_flatten(trainer.model.parameters())},
            **{f"optimizer.{k}": np.array(v) for k, v in tree_flatten(trainer.optimizer.state)},
            **{f"average.{k}": np.array(v) for k, v in trainer.ema.items()},
        }
        results[compiled] = {"scalars": scalars, "before": before, "after": after}
    return results


@pytest.mark.slow
def test_compiled_training_step_gives_the_eager_loss_and_gradient_norm(two_steps):
    eager, compiled = two_steps[False]["scalars"], two_steps[True]["scalars"]
    for (loss, correct, norm), (loss_c, correct_c, norm_c) in zip(eager, compiled, strict=True):
        assert np.isfinite(loss) and norm > 0
        assert correct_c == correct
        assert abs(loss_c - loss) <= COMPILED_TOLERANCE * abs(loss)
        assert abs(norm_c - norm) <= COMPILED_TOLERANCE * norm
    assert eager[1][0] != eager[0][0], "the second step should see the first one's update"


@pytest.mark.slow
def test_compiled_training_step_updates_every_array_as_the_eager_one(two_steps):
    eager, compiled = two_steps[False], two_steps[True]
    assert eager["before"].keys() == compiled["before"].keys()
    for key in eager["before"]:  # the same initial weights, so the updates are comparable
        np.testing.assert_array_equal(eager["before"][key], compiled["before"][key])
    assert eager["after"].keys() == compiled["after"].keys()
    moved = 0
    for key, value in eager["after"].items():
        start = eager["before"].get(key.removeprefix("model.").removeprefix("average."), 0.0)
        change, change_compiled = value - start, compiled["after"][key] - start
        scale = float(np.max(np.abs(change)))
        moved += scale > 0
        error = float(np.max(np.abs(change_compiled - change)))
        assert error <= COMPILED_TOLERANCE * scale, (key, error, scale)
    assert moved > 0.9 * len(eager["after"]), "most arrays should have changed in two steps"


@pytest.mark.slow
def test_compiled_fast_inference_path_gives_the_plain_models_outputs(plain):
    fast = fast_model(plain)
    assert_plain(plain)  # the rewrite worked on a copy of the module tree
    images = mx.array(real_photos(107, 2))  # the smallest size every block runs at, about
    assert_close(fast.compiled_forward(images), plain(images), "logits", COMPILED_TOLERANCE)
    for layer in ("Conv2d_4a_3x3", "Mixed_6e", "avgpool"):
        assert_close(fast.compiled_features(images, layer), plain.features(images, layer),
                     layer, COMPILED_TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize(("layer", "torch_modules"), [
    ("Mixed_6b", ["Mixed_6b"]),
    ("Mixed_7b.branch3x3", ["Mixed_7b.branch3x3_2a", "Mixed_7b.branch3x3_2b"]),
])
def test_grad_cam_matches_torchvision_autograd(plain, calibrated_model, layer, torch_modules):
    photo = real_photos(107, 1)
    expected, alphas = torch_grad_cam(
        calibrated_model, photo, 281, [calibrated_model.get_submodule(m) for m in torch_modules]
    )
    result = grad_cam(plain, mx.array(photo), 281, layer)
    # The tolerances of tests/inference/test_gradcam.py: gradients of float32 sums in another order.
    np.testing.assert_allclose(result.channel_weights, alphas, rtol=1e-3,
                               atol=1e-3 * np.abs(alphas).max())
    np.testing.assert_allclose(result.heatmap, expected, atol=2e-3)


@pytest.mark.slow
def test_train_compile_runs_through_the_command_line(module_tmp, capsys):
    data = write_photo_folder(module_tmp("cli_photos") / "train", 96)
    out = module_tmp("cli_run") / "run"
    code = cli_main(["train", "--data", str(data), "--out", str(out), "--compile",
                     "--image-size", "75", "--batch-size", "2", "--epochs", "1",
                     "--val-split", "0", "--workers", "1", "--json", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["steps"] == 2 and summary["epochs_completed"] == 1
    assert summary["compile_seconds"] is not None
    assert np.isfinite(summary["last_metrics"]["train_loss"])
    model = mlx_inception.load(out)
    assert_plain(model)
    assert model.config.labels == ["animal", "thing"]
    logits = model(mx.array(real_photos(75, 2)))
    assert logits.shape == (2, 2) and np.all(np.isfinite(np.asarray(logits)))
