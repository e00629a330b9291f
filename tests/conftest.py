"""Shared fixtures: torchvision's own Inception-v3 as the reference, and its checkpoints."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import mlx_inception  # noqa: E402,F401  (loads the fast BLAS before anything imports mlx.core)


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return torch


def make_reference_model(seed: int = 0, num_classes: int = 1000, aux_logits: bool = True):
    """torchvision's inception_v3 with its own init from a seed and non-trivial BN statistics."""
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
