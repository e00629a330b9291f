"""Shared fixtures: torchvision's own Inception-v3 as the reference, and its checkpoints."""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# MLX computes float32 matrix products and convolutions at TF32 precision by default on CUDA and
# on Apple GPUs with neural accelerators (M5 and newer), about 1e-3 relative: far outside the
# torchvision parity tolerances below. Full float32, as MLX's own tests run; MLX reads this at
# its first use, so before anything imports mlx.core (docs/testing.md).
os.environ.setdefault("MLX_ENABLE_TF32", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mlx_inception  # noqa: E402,F401  (loads the fast BLAS before anything imports mlx.core)

# MLX_INCEPTION_TEST_DEVICE=gpu runs the suite on the default GPU (Metal or CUDA), =cpu on the
# CPU; unset, on MLX's default device (the GPU on a Mac, the CPU with Linux's CPU wheel).
TEST_DEVICE_VARIABLE = "MLX_INCEPTION_TEST_DEVICE"


def pytest_configure(config):
    import mlx.core as mx  # here, not above: only after mlx_inception (the BLAS preload)

    wanted = os.environ.get(TEST_DEVICE_VARIABLE, "").strip().lower()
    if wanted == "gpu":
        if not mx.is_available(mx.gpu):
            raise pytest.UsageError(
                f"{TEST_DEVICE_VARIABLE}=gpu, but this MLX {mx.__version__} has no GPU backend "
                "(Metal on a Mac; on Linux install the CUDA one: pip install -e \".[cuda]\", "
                "see docs/performance.md#install-on-every-backend)"
            )
        mx.set_default_device(mx.gpu)
    elif wanted == "cpu":
        mx.set_default_device(mx.cpu)
    elif wanted:
        raise pytest.UsageError(f"{TEST_DEVICE_VARIABLE} must be gpu or cpu, not {wanted!r}")


def runs_on_gpu() -> bool:
    """Return whether the tests' arrays live on a GPU (set once, in pytest_configure)."""
    import mlx.core as mx

    return mx.default_device().type == mx.DeviceType.gpu


# Tests of what only the CPU runs (the CPU kernels, the BLAS MLX's CPU backend calls) skip on a
# GPU, where MLX's own GPU kernels compute those operations: such a file sets
# ``pytestmark = pytest.mark.skipif(runs_on_gpu(), reason=CPU_ONLY)`` (evaluated at collection,
# after pytest_configure chose the device).
CPU_ONLY = (f"checks code only the CPU runs (the CPU kernels or its BLAS), and the tests run on "
            f"the GPU ({TEST_DEVICE_VARIABLE} or MLX's default device)")


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    """``module_tmp(name)`` makes a folder for one module's shared fixtures; every folder it
    made is deleted when the module's tests are done.

    The suite writes several gigabytes of weights and checkpoints (a full-size network is about
    100 MB, a training checkpoint with its optimizer state about 400 MB). Folders of passing
    tests go as each test ends (``tmp_path_retention_policy = "failed"``); these go with their
    module, so the peak on disk is one module's, not the whole run's.
    """
    made = []

    def make(name: str):
        path = tmp_path_factory.mktemp(name)
        made.append(path)
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def full_disk_on_save(monkeypatch, module, tmp_path) -> None:
    """Make ``module.mx.save_safetensors`` write to /dev/full: a real "no space left" failure
    of MLX's writer. Where there is no /dev/full (macOS), MLX's own message is raised instead."""
    real = module.mx.save_safetensors
    full = tmp_path / "full.safetensors"
    if os.path.exists("/dev/full"):
        full.symlink_to("/dev/full")

    def save(path, arrays, *args, **kwargs):
        if not full.is_symlink():
            raise RuntimeError("[write] Unable to write 8 bytes to file.")
        real(str(full), arrays, *args, **kwargs)

    monkeypatch.setattr(module.mx, "save_safetensors", save)


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return torch


def make_reference_model(seed: int = 0, num_classes: int = 1000, aux_logits: bool = True):
    """torchvision's inception_v3 with its own init from a seed and non-trivial BN statistics.

    Its activations grow layer after layer (logits near 1e12): use it for names, shapes and
    file formats, and :func:`make_calibrated_model` for numbers.
    """
    torch = _torch()
    from torchvision.models import inception_v3

    torch.manual_seed(seed)
    model = inception_v3(
        weights=None, aux_logits=aux_logits, init_weights=True, num_classes=num_classes
    )
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                module.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


def real_photos(size: int = 299, count: int = 4) -> np.ndarray:
    """Bundled real photos (scikit-image), resized to size x size, ImageNet-normalised, NHWC."""
    from PIL import Image
    from skimage import data

    names = ["chelsea", "coffee", "astronaut", "rocket", "horse", "immunohistochemistry"]
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    images = []
    for name in names[:count]:
        image = Image.fromarray(getattr(data, name)()).convert("RGB").resize((size, size))
        images.append((np.asarray(image, dtype=np.float32) / 255.0 - mean) / std)
    return np.stack(images)


def make_calibrated_model(seed: int = 0):
    """torchvision's inception_v3 whose BatchNorm statistics were measured on real photos.

    With torchvision's random init and arbitrary statistics, activations grow by orders of
    magnitude (logits near 1e10, past float16's range). Calibrating every BatchNorm on real
    images, as training would, keeps activations at the scale of a trained network.
    """
    torch = _torch()
    from torchvision.models import inception_v3

    torch.manual_seed(seed)
    model = inception_v3(weights=None, aux_logits=True, init_weights=True)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    photos = torch.from_numpy(real_photos(299, 6).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        for batch in photos.split(3):
            model(batch)
    return model.eval()


@pytest.fixture(scope="session")
def calibrated_model():
    """torchvision's Inception-v3 with BatchNorm statistics measured on real photos, eval mode."""
    return make_calibrated_model()


@pytest.fixture(scope="session")
def calibrated_checkpoint(calibrated_model, tmp_path_factory):
    """The calibrated model's state_dict saved by torch as a .pth file."""
    torch = _torch()
    pth = tmp_path_factory.mktemp("calibrated") / "inception_v3_calibrated.pth"
    torch.save(calibrated_model.state_dict(), pth)
    return pth


@pytest.fixture(scope="session")
def calibrated_weights_dir(calibrated_checkpoint):
    """The calibrated model converted to a weights directory."""
    from mlx_inception.checkpoints.convert import convert_checkpoint

    out, _ = convert_checkpoint(calibrated_checkpoint, calibrated_checkpoint.parent / "weights")
    return out


@pytest.fixture(scope="session")
def reference_model():
    """torchvision's Inception-v3 (1000 classes, aux head), seeded, in eval mode."""
    return make_reference_model()


@pytest.fixture(scope="session")
def reference_checkpoints(reference_model, tmp_path_factory):
    """The reference state_dict saved by torch as .pth and as .safetensors."""
    torch = _torch()
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("reference")
    state = reference_model.state_dict()
    pth = folder / "inception_v3_reference.pth"
    torch.save(state, pth)
    safetensors_path = folder / "inception_v3_reference.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safetensors_path))
    return {"pth": pth, "safetensors": safetensors_path}


def to_nhwc(tensor) -> np.ndarray:
    """A torch NCHW activation as a numpy NHWC array (2-D outputs unchanged)."""
    array = tensor.detach().cpu().numpy()
    return array.transpose(0, 2, 3, 1) if array.ndim == 4 else array


def random_images(shape: tuple[int, int, int, int], seed: int = 0) -> np.ndarray:
    """ImageNet-normalised-looking float32 input, NHWC."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32)


# Parity tolerance: float32 arithmetic in another order (MLX's and PyTorch's convolutions,
# pooling and means accumulate differently) agrees to max|diff| <= 1e-4 * max|reference|.
# On the calibrated network and real photos (logits about 6) the whole network's logits differ
# by 1.1e-5 to 1.9e-5 of their scale at 79 to 299 px (2026-12, x86_64, MKL): a margin of five.
# Compare on that network: with make_reference_model's statistics the logits reach 1e12, and a
# tolerance relative to the largest of them says nothing about the rest.
RELATIVE_TOLERANCE = 1e-4
# In training mode every BatchNorm divides by the standard deviation of a small batch, which
# amplifies the rounding differences layer after layer: 1e-3 there (measured: about 2e-4).
TRAINING_TOLERANCE = 1e-3


def assert_close(actual, expected, name: str = "output",
                 tolerance: float = RELATIVE_TOLERANCE) -> float:
    """Assert max|actual - expected| <= tolerance * max|expected|; return the relative error."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{name}: {actual.shape} != {expected.shape}"
    error = float(np.max(np.abs(actual - expected)))
    scale = float(np.max(np.abs(expected)))
    assert error <= tolerance * scale, f"{name}: max|diff| {error:.3g} vs scale {scale:.3g}"
    return error / scale


def torch_grad_cam(reference_model, image: np.ndarray, class_index: int, modules):
    """Grad-CAM from torchvision's own autograd, hooking the modules whose outputs form the map."""
    import torch

    outputs = []

    def keep(_module, _inputs, output):
        output.retain_grad()
        outputs.append(output)

    handles = [module.register_forward_hook(keep) for module in modules]
    try:
        logits = reference_model(torch.from_numpy(image.transpose(0, 3, 1, 2).copy()))
        logits[0, class_index].backward()
    finally:
        for handle in handles:
            handle.remove()
    activation = torch.cat([o for o in outputs], dim=1)[0].detach().numpy()
    gradient = torch.cat([o.grad for o in outputs], dim=1)[0].numpy()
    alphas = gradient.mean(axis=(1, 2))
    cam = np.maximum(np.tensordot(alphas, activation, axes=1), 0)
    return cam / cam.max(), alphas


def assert_gradients_as_accurate_as_torchs(grads, torch32, torch64, names) -> None:
    """Assert each named MLX gradient is no farther from torchvision's float64 gradient than
    twice torchvision's own float32 one (or 1e-4 of its scale, where float32 is exact enough).

    ``grads``: flat MLX gradients by torchvision's parameter names; ``torch32``/``torch64``:
    ``named_parameters()`` of the float32 and float64 reference after their backward pass.
    """
    for name in names:
        exact = torch64[name].grad.numpy()
        approx = torch32[name].grad.numpy().astype(np.float64)
        ours = np.array(grads[name], dtype=np.float64)
        if exact.ndim == 4:
            exact, approx = exact.transpose(0, 2, 3, 1), approx.transpose(0, 2, 3, 1)
        scale = np.max(np.abs(exact))
        torch_error = np.max(np.abs(approx - exact)) / scale
        our_error = np.max(np.abs(ours - exact)) / scale
        assert our_error <= max(2 * torch_error, 1e-4), (name, our_error, torch_error)


@pytest.fixture(scope="session")
def untrained_model():
    """An Inception-v3 with MLX's default initialisation (cheap to build, no torch), eval mode.

    Shared read-only: tests that change its weights or mode build their own.
    """
    from mlx_inception import InceptionV3

    network = InceptionV3(init_weights=False)
    network.eval()
    return network
