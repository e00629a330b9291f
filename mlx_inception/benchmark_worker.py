"""One measurement of one framework, in a process of its own: ``python benchmark_worker.py SPEC``.

Run by path (never as ``mlx_inception.benchmark_worker``), so a torchvision measurement never
imports MLX nor the fast BLAS this package loads, and each process's peak memory is its own.
``SPEC`` is a JSON object (see :mod:`mlx_inception.benchmark`); the result is printed as one
JSON line on stdout. Nothing here imports the package at module level.

Peak memory: on Linux the kernel's resident-set high-water mark (``VmHWM``) is reset through
``/proc/self/clear_refs`` once the framework is imported, and the task's peak is that mark at
the end minus the resident set at the reset: weights, activations, gradients, workspaces and
allocator caches, without the libraries' code. Elsewhere ``ru_maxrss`` (the whole process's
peak, libraries included) stands in.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Measures a task's peak resident memory from the moment it is created."""

    def __init__(self) -> None:
        self.baseline_kib: int | None = None
        self.exact = False
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")  # 5: reset the peak resident set size to the current one
        except OSError:
            return
        # The baseline is the peak just after the reset, not an earlier reading of the resident
        # set, which may have shrunk in between and left the growth negative.
        self.baseline_kib = _status_kib("VmHWM")
        self.exact = self.baseline_kib is not None

    def peak_mib(self) -> float:
        """Return the task's peak in MiB (the process's peak where it cannot be isolated)."""
        if self.exact:
            peak = _status_kib("VmHWM")
            if peak is not None:
                # The kernel's resident-set counters are per-thread and folded in lazily, so two
                # readings can disagree by some pages (CI saw -0.05 MiB): no growth reads as 0.
                return max(0.0, (peak - self.baseline_kib) / 1024)
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def timed(run: Callable[[], None], iterations: int, warmup: int, budget_s: float) -> list[float]:
    """Return the seconds of up to ``iterations`` calls after ``warmup`` untimed ones.

    Stops early once ``budget_s`` seconds of timed calls have passed (at least one call is
    always timed), and warms up once only when that call took over a quarter of the budget,
    so a slow configuration (half precision on a CPU) cannot stall the whole benchmark.
    """
    for index in range(warmup):
        start = time.perf_counter()
        run()
        if index == 0 and time.perf_counter() - start > budget_s / 4:
            break
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < iterations:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        if time.perf_counter() - began > budget_s:
            break
    return times


def _mlx(spec: dict[str, Any]) -> dict[str, Any]:
    import mlx_inception  # first: it loads the fast BLAS, which must precede mlx.core

    blas = mlx_inception._blas.status
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    from mlx_inception import kernels
    from mlx_inception.fast import fold_batchnorm, optimize_for_inference
    from mlx_inception.model import InceptionV3, InceptionV3Config

    memory = PeakMemory()

    batch, size = spec["batch"], spec["size"]
    dtype = getattr(mx, spec["dtype"])
    mx.random.seed(0)
    training = spec["task"] == "training"
    model = kernels.install(InceptionV3(InceptionV3Config(aux_logits=not training or size >= 299)))
    images = mx.random.normal((batch, size, size, 3)).astype(dtype)
    if training:
        labels = mx.random.randint(0, 1000, (batch,))
        model.train()
        optimizer = optim.SGD(learning_rate=0.01, momentum=0.9)

        def loss_fn(model: nn.Module, x: mx.array, y: mx.array) -> mx.array:
            out = model(x)
            if isinstance(out, tuple):  # torchvision's recipe: main loss + 0.4 * aux loss
                return (nn.losses.cross_entropy(out[0], y).mean()
                        + 0.4 * nn.losses.cross_entropy(out[1], y).mean())
            return nn.losses.cross_entropy(out, y).mean()

        loss_and_grad = nn.value_and_grad(model, loss_fn)
        state = [model.state, optimizer.state, mx.random.state]

        def train_step(x: mx.array, y: mx.array) -> mx.array:
            loss, grads = loss_and_grad(model, x, y)
            optimizer.update(model, grads)
            return loss

        # Eager by default: on MLX 0.32's CPU backend the compiled step was slower
        # (docs/performance.md).
        if spec.get("compile", False):
            train_step = mx.compile(train_step, inputs=state, outputs=state)

        def run() -> None:
            mx.eval(train_step(images, labels), state)
    else:
        model.eval()
        if dtype != mx.float32:
            fold_batchnorm(model)  # as mlx_inception.load(dtype=...) does: statistics in float32
            model.set_dtype(dtype)
        if spec["framework"] == "mlx-fast":
            optimize_for_inference(model)

        def run() -> None:
            mx.eval(model(images))

    mx.eval(model.parameters())
    times = timed(run, spec["iterations"], spec["warmup"], spec["budget_s"])
    return {
        "times": times,
        "peak_mib": memory.peak_mib(),
        "peak_exact": memory.exact,
        "allocator_peak_mib": mx.get_peak_memory() / 2**20,
        "versions": {"mlx": mx.__version__, "mlx_inception": mlx_inception.__version__},
        "device": str(mx.default_device()),
        "blas": blas,
    }


def _torch_blas(torch) -> str:
    config = torch.__config__.show()
    blas = next((part.split("=", 1)[1] for part in config.replace(",", "\n").split()
                 if part.startswith("BLAS_INFO=")), "unknown")
    onednn = "oneDNN " if torch.backends.mkldnn.is_available() else ""
    return f"{onednn}convolutions, {blas} BLAS"


def _torch(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    import torchvision
    from torchvision.models import inception_v3

    memory = PeakMemory()

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    batch, size = spec["batch"], spec["size"]
    dtype = getattr(torch, spec["dtype"])
    training = spec["task"] == "training"
    model = inception_v3(weights=None, aux_logits=not training or size >= 299, init_weights=True)
    images = torch.randn(batch, 3, size, size)
    if training:
        labels = torch.randint(0, 1000, (batch,))
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        cross_entropy = torch.nn.functional.cross_entropy

        def run() -> None:
            optimizer.zero_grad(set_to_none=True)
            out = model(images)
            if isinstance(out, tuple):
                loss = cross_entropy(out[0], labels) + 0.4 * cross_entropy(out[1], labels)
            else:
                loss = cross_entropy(out, labels)
            loss.backward()
            optimizer.step()
    else:
        model.eval().to(dtype)
        images = images.to(dtype)

        def run() -> None:
            with torch.inference_mode():
                model(images)

    times = timed(run, spec["iterations"], spec["warmup"], spec["budget_s"])
    return {
        "times": times,
        "peak_mib": memory.peak_mib(),
        "peak_exact": memory.exact,
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__},
        "device": "cpu",
        "blas": _torch_blas(torch),
        "threads": torch.get_num_threads(),
    }


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Return one measurement: ``times`` (seconds per call), ``peak_mib``, versions, BLAS."""
    measure = _torch if spec["framework"] == "torch" else _mlx
    try:
        result = measure(spec)
    except Exception as error:  # reported, not raised: one unsupported case must not end a run
        last = traceback.format_exception_only(type(error), error)[-1].strip()
        result = {"error": last.splitlines()[0][:300]}
    result["spec"] = spec
    result["load_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result["python"] = platform.python_version()
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: benchmark_worker.py SPEC_JSON", file=sys.stderr)
        return 2
    print(json.dumps(run_worker(json.loads(argv[1]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
