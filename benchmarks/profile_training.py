"""Where a training step spends its time, stage by stage, in MLX and in torchvision.

Run from the repository root (torch and torchvision installed):

    python benchmarks/profile_training.py [--batch 16] [--threads 2]

Each stage of the network (stem layers, Inception blocks, the aux head) runs forward and
backward on its own, in training mode, on the activation the network gives it; the gradient
of the sum of its output is taken with respect to its parameters and its input. Both frameworks
use the same thread count, each in its own process; best of two, wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

MLX_STAGES = """
import json, sys, time
import mlx_inception, mlx.core as mx, mlx.nn as nn
from mlx_inception.model import InceptionV3, InceptionV3Config
from mlx_inception.model.inception_v3 import MIXED, STEM
from mlx_inception import kernels
batch = int(sys.argv[1])
model = kernels.install(InceptionV3(InceptionV3Config()))
model.train()
stages, x = [], mx.random.normal((batch, 299, 299, 3))
for name in STEM + MIXED:
    module = getattr(model, name)
    stages.append((name, module, x))
    x = module(x)
    if name == "Mixed_6e":
        stages.append(("AuxLogits", model.AuxLogits, x))
mx.eval([s[2] for s in stages])
result = {}
for name, module, inputs in stages:
    params = module.trainable_parameters() if isinstance(module, nn.Module) else {}
    def loss(p, t, module=module):
        if isinstance(module, nn.Module):
            module.update(p)
        return module(t).sum()
    grad = mx.grad(loss, argnums=(0, 1))
    mx.eval(grad(params, inputs))
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter(); mx.eval(grad(params, inputs))
        best = min(best, time.perf_counter() - start)
    result[name] = best
print(json.dumps(result))
"""

TORCH_STAGES = """
import json, sys, time, torch
from torchvision.models import inception_v3
batch, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
model = inception_v3(weights=None, aux_logits=True, init_weights=True).train()
order = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
         "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
         "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]
stages, x = [], torch.randn(batch, 3, 299, 299)
with torch.no_grad():
    for name in order:
        module = getattr(model, name)
        stages.append((name, module, x))
        x = module(x)
        if name == "Mixed_6e":
            stages.append(("AuxLogits", model.AuxLogits, x))
result = {}
for name, module, inputs in stages:
    def step():
        t = inputs.detach().requires_grad_()
        module.zero_grad(set_to_none=True)
        module(t).sum().backward()
    step()
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter(); step(); best = min(best, time.perf_counter() - start)
    result[name] = best
print(json.dumps(result))
"""


def run(code: str, *args: str, threads: int) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    mlx = run(MLX_STAGES, str(args.batch), threads=args.threads)
    torch = run(TORCH_STAGES, str(args.batch), str(args.threads), threads=args.threads)
    print(f"batch {args.batch}, 299 px, {args.threads} threads: forward + backward per stage (s)")
    print(f"{'stage':15s} {'MLX':>7s} {'torch':>7s} {'MLX/torch':>9s}")
    for name in mlx:
        print(f"{name:15s} {mlx[name]:7.2f} {torch[name]:7.2f} {mlx[name] / torch[name]:9.2f}")
    total_mlx, total_torch = sum(mlx.values()), sum(torch.values())
    print(f"{'total':15s} {total_mlx:7.2f} {total_torch:7.2f} {total_mlx / total_torch:9.2f}")


if __name__ == "__main__":
    main()
