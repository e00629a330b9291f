"""The fast inference path against the plain model in one process, calls alternated in pairs.

Run from the repository root:

    python benchmarks/compare_fast_path.py [--batch 1] [--pairs 40]

On a busy machine the fresh processes of ``mlx-inception bench`` land on different loads, so
their ratios spread widely; here both models share the process, the weights and the input, and
each pair's two calls (the order alternating) run back to back. Prints one JSON object: images/s
from the median wall time, process CPU seconds per image, and the median and range of the
per-pair speedups (plain time / fast time), in wall time and in CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

# ruff: noqa: I001  (mlx_inception must be imported before mlx.core: it loads the fast BLAS)
import mlx_inception  # noqa: F401
import mlx.core as mx

from mlx_inception import kernels
from mlx_inception.fast import fast_model
from mlx_inception.model import InceptionV3, InceptionV3Config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--size", type=int, default=299)
    args = parser.parse_args()
    mx.random.seed(0)
    plain = kernels.install(InceptionV3(InceptionV3Config()))  # as mlx_inception.load builds it
    plain.eval()
    mx.eval(plain.parameters())
    models = {"plain": plain, "fast": fast_model(plain)}
    images = mx.random.normal((args.batch, args.size, args.size, 3))
    for model in (*models.values(), *models.values()):  # warm up: caches, allocator
        mx.eval(model(images))
    times: dict[str, list[tuple[float, float]]] = {"plain": [], "fast": []}
    for pair in range(args.pairs):
        for name in ("plain", "fast") if pair % 2 == 0 else ("fast", "plain"):
            wall, cpu = time.perf_counter(), time.process_time()
            mx.eval(models[name](images))
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    report = {"batch": args.batch, "size": args.size, "pairs": args.pairs,
              "load_average": os.getloadavg()}
    for name, calls in times.items():
        report[f"{name}_images_per_s"] = args.batch / statistics.median(t[0] for t in calls)
        report[f"{name}_cpu_s_per_image"] = statistics.median(t[1] for t in calls) / args.batch
    for index, clock in ((0, "wall"), (1, "cpu")):
        speedups = [p[index] / f[index] for p, f in zip(times["plain"], times["fast"], strict=True)]
        report[f"fast_speedup_{clock}_median"] = statistics.median(speedups)
        report[f"fast_speedup_{clock}_range"] = [min(speedups), max(speedups)]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
