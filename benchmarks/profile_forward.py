"""Where an inference pass spends its time: matrix products against everything else.

Run from the repository root (torch and torchvision installed for the last line):

    python benchmarks/profile_forward.py [--batch 1] [--size 299]

Everything is measured on ONE thread (MKL_NUM_THREADS=1, torch.set_num_threads(1)) as process
CPU time, which a busy machine disturbs far less than wall time, and 2 threads can at best
halve. Printed, per image:

1. the fast path's forward pass (folded, fused, sequential);
2. the same matrix products alone, on ready-made matrices: what an im2col + BLAS design
   costs if padding, unfolding, bias, ReLU, pooling and concatenation were free;
3. per kind of convolution: MLX's convolution (+ bias + ReLU) against its matrix product;
4. torchvision's forward pass (oneDNN's direct convolutions, no unfolding).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict

os.environ["MKL_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import mlx_inception  # noqa: E402,F401,I001  (loads MKL before mlx.core)
import mlx.core as mx  # noqa: E402

from mlx_inception.model import InceptionV3, InceptionV3Config, fuse  # noqa: E402
from mlx_inception.model.layers import BasicConv2d  # noqa: E402

TORCH_FORWARD = """
import sys, time, torch
from torchvision.models import inception_v3
torch.set_num_threads(1)
batch, size = int(sys.argv[1]), int(sys.argv[2])
model = inception_v3(weights=None, aux_logits=False, init_weights=True).eval()
x = torch.randn(batch, 3, size, size)
times = []
with torch.inference_mode():
    for _ in range(5):
        start = time.process_time(); model(x); times.append(time.process_time() - start)
print(min(times[1:]))
"""


def cpu_seconds(run, repeats: int = 5) -> float:
    """Return the least process CPU time of ``repeats`` evaluated calls, after one warm-up."""
    mx.eval(run())
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        mx.eval(run())
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=299)
    args = parser.parse_args()
    batch = args.batch
    model = InceptionV3(InceptionV3Config(aux_logits=False))
    fuse.optimize_for_inference(model, parallel=False)
    images = mx.random.normal((batch, args.size, args.size, 3))

    convolutions, products = [], []
    original_conv, original_pointwise = BasicConv2d.__call__, fuse.ParallelPointwise.__call__

    def record_conv(self, x):
        convolutions.append((self, x))
        return original_conv(self, x)

    def record_pointwise(self, x):
        products.append((x.size // x.shape[-1], x.shape[-1], self.weight.shape[0]))
        return original_pointwise(self, x)

    BasicConv2d.__call__, fuse.ParallelPointwise.__call__ = record_conv, record_pointwise
    mx.eval(InceptionV3.__call__(model, images))
    BasicConv2d.__call__, fuse.ParallelPointwise.__call__ = original_conv, original_pointwise

    forward = cpu_seconds(lambda: InceptionV3.__call__(model, images))
    kinds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    flops = 0
    for module, x in convolutions:
        weight = module.conv.weight
        out = module(x)
        rows, depth, width = out.size // weight.shape[0], weight[0].size, weight.shape[0]
        a, b = mx.random.normal((rows, depth)), mx.random.normal((depth, width))
        kind = f"{weight.shape[1]}x{weight.shape[2]}" + (" (stem)" if x.shape[1] > 40 else "")
        kinds[kind][0] += cpu_seconds(lambda m=module, x=x: m(x))
        kinds[kind][1] += cpu_seconds(lambda a=a, b=b: a @ b)
        kinds[kind][2] += 1
        flops += 2 * rows * depth * width
    fused_seconds = 0.0
    for rows, depth, width in products:
        a, b = mx.random.normal((rows, depth)), mx.random.normal((depth, width))
        fused_seconds += cpu_seconds(lambda a=a, b=b: a @ b)
        flops += 2 * rows * depth * width
    gemm = sum(v[1] for v in kinds.values()) + fused_seconds

    def per_image(seconds: float) -> str:
        return f"{1e3 * seconds / batch:7.1f} ms"

    print(f"one thread, batch {batch}, {args.size} px, {flops / batch / 1e9:.2f} GFLOP per image")
    print(f"fast path forward          {per_image(forward)}")
    print(f"its matrix products alone  {per_image(gemm)}  ({flops / gemm / 1e9:.0f} GFLOP/s)")
    print(f"everything else            {per_image(forward - gemm)}  "
          f"({100 * (forward - gemm) / forward:.0f}%)")
    print("by convolution kind: convolution + bias + ReLU / matrix product alone")
    for kind, (conv, product, count) in sorted(kinds.items(), key=lambda kv: kv[1][1] - kv[1][0]):
        print(f"  {kind:11s} x{count:2d} {per_image(conv)} / {per_image(product)}")
    print(f"  fused 1x1    x{len(products):2d}            / {per_image(fused_seconds)}")
    try:
        torch_seconds = float(subprocess.run(
            [sys.executable, "-c", TORCH_FORWARD, str(batch), str(args.size)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        ).stdout.strip())
        print(f"torchvision forward        {per_image(torch_seconds)}")
    except (subprocess.CalledProcessError, ValueError) as error:
        print(f"torchvision forward        not measured ({error})")


if __name__ == "__main__":
    main()
