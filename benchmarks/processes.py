"""Spreading one training step (or one inference batch) over processes on this machine.

Run by hand, not in CI (docs/performance.md, "Spreading work over processes")::

    python benchmarks/processes.py --size 75 --batch 32 --steps 6 --warmup 2
    python benchmarks/processes.py --size 299 --batch 16 --steps 3 --warmup 1   # aux head
    python benchmarks/processes.py --task inference --size 299 --batch 8 [--fast]

Three set-ups of the same global batch, started one after the other (never together):

- ``one``: one process, ``--threads`` BLAS threads, the whole batch in one pass;
- ``one-split``: one process, the batch in ``--processes`` micro-batches run in turn (the same
  arithmetic as the processes below, so its weights are the reference for them);
- ``processes``: ``--processes`` processes, one BLAS thread each, joined by ``mx.distributed``'s
  ring backend on loopback (ranks started here with ``MLX_RANK``/``MLX_HOSTFILE``, not
  ``mlx.launch``, which busy-waits), each with its share, gradients and BatchNorm statistics
  averaged by the project's step (``training.step.make_train_step``).

Prints the median images/s of each and, for training, how far the weights after the timed
steps are from ``one-split``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

_ROLE = "_PROCESSES_BENCH_ROLE"


def _worker(args: argparse.Namespace, out: str) -> None:
    import mlx_inception  # noqa: I001  (first: it loads the fast BLAS before mlx.core)
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten

    from mlx_inception.training.distributed import init_group

    group = init_group("ring" if "MLX_HOSTFILE" in os.environ else "any")
    rank, size = group.rank(), group.size()
    micro = int(os.environ.get("_PROCESSES_BENCH_MICRO", "1"))
    share = args.batch // size
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch, args.size, args.size, 3)).astype(np.float32)
    labels = rng.integers(0, 1000, args.batch)
    mine = slice(rank * share, (rank + 1) * share)

    if args.task == "inference":
        from mlx_inception import kernels
        from mlx_inception.model import InceptionV3, InceptionV3Config

        mx.random.seed(0)
        model = kernels.install(InceptionV3(InceptionV3Config())).eval()
        if args.fast:
            from mlx_inception.fast import optimize_for_inference

            optimize_for_inference(model)
        x = mx.array(images[mine])

        def run() -> mx.array:
            out = model(x)
            if size > 1:  # every rank ends with the whole batch's logits, as one process would
                out = mx.distributed.all_gather(out, group=group)
            mx.eval(out)
            return out
    else:
        from mlx_inception import kernels
        from mlx_inception.model import InceptionV3, InceptionV3Config
        from mlx_inception.training.optim import TFRMSProp
        from mlx_inception.training.recipe import resolve
        from mlx_inception.training.step import KeyedDropout, dropout_keys, make_train_step

        config, _ = resolve({"data": "d", "out": "o", "image_size": args.size,
                             "batch_size": args.batch})
        aux = args.size >= 299
        mx.random.seed(0)
        model = kernels.install(InceptionV3(InceptionV3Config(aux_logits=aux, labels=None)))
        model.dropout = KeyedDropout(model.config.dropout)
        model.train()
        optimizer = TFRMSProp(0.01)
        optimizer.init(model.trainable_parameters())
        step = make_train_step(model, optimizer, {}, config, group)
        x = mx.array(images[mine].reshape(micro, share // micro, args.size, args.size, 3))
        y = mx.array(labels[mine].reshape(micro, share // micro))
        count = [0]

        def run() -> mx.array:
            loss, _, _ = step(x, y, dropout_keys(0, count[0], rank, micro))
            mx.eval(loss, model.parameters(), optimizer.state)
            count[0] += 1
            return loss

    times = []
    for i in range(args.warmup + args.steps):
        start = time.perf_counter()
        result = run()
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    if rank == 0:
        np.save(out + ".npy", np.array(result)) if args.task == "inference" else np.savez(
            out + ".npz", **{k: np.array(v) for k, v in tree_flatten(model.parameters())})
        with open(out + ".json", "w") as f:
            json.dump({"times": times, "blas": mlx_inception._blas.status, "group": size}, f)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run(args: argparse.Namespace, name: str, processes: int, threads: int, micro: int,
         folder: str) -> dict:
    out = os.path.join(folder, name)
    env = {**os.environ, _ROLE: out, "_PROCESSES_BENCH_MICRO": str(micro),
           "MKL_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    for key in ("MLX_RANK", "MLX_HOSTFILE"):
        env.pop(key, None)
    if processes > 1:
        hostfile = os.path.join(folder, "hosts.json")
        with open(hostfile, "w") as f:
            json.dump([[f"127.0.0.1:{p}"] for p in _free_ports(processes)], f)
        env["MLX_HOSTFILE"] = hostfile
    children = []
    for rank in range(processes):
        if processes > 1:
            env = {**env, "MLX_RANK": str(rank)}
        children.append(subprocess.Popen([sys.executable, __file__, *sys.argv[1:]], env=env))
    deadline = time.monotonic() + args.timeout
    for child in children:
        try:
            child.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for c in children:
                c.kill()
            raise SystemExit(f"{name}: no result within {args.timeout:.0f} s") from None
        if child.returncode:
            raise SystemExit(f"{name}: a process failed ({child.returncode})")
    with open(out + ".json") as f:
        return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("training", "inference"), default="training")
    parser.add_argument("--size", type=int, default=75)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads of the one process")
    parser.add_argument("--fast", action="store_true",
                        help="inference on the fast path (predict's default), not the plain model")
    parser.add_argument("--timeout", type=float, default=1200.0)
    args = parser.parse_args()
    if os.environ.get(_ROLE):
        return _worker(args, os.environ[_ROLE])
    if args.batch % args.processes:
        parser.error("--batch must divide among --processes")

    import numpy as np

    with tempfile.TemporaryDirectory() as folder:
        setups = [("one", 1, args.threads, 1)]
        if args.task == "training":
            setups.append(("one-split", 1, args.threads, args.processes))
        setups.append(("processes", args.processes, 1, 1))
        medians = {}
        for name, processes, threads, micro in setups:
            result = _run(args, name, processes, threads, micro, folder)
            medians[name] = float(np.median(result["times"]))
            print(f"{name:10s} {args.batch / medians[name]:7.2f} images/s  (median of "
                  f"{len(result['times'])} steps, group of {result['group']}, "
                  f"{result['blas'].split(':')[0]})", flush=True)
        print(f"processes / one: {medians['one'] / medians['processes']:.2f}x")
        if args.task == "inference":
            a, b = (np.load(os.path.join(folder, n + ".npy")) for n in ("one", "processes"))
            print(f"logits: max |difference| {np.max(np.abs(a - b)):.3g} "
                  f"(largest |logit| {np.max(np.abs(a)):.3g})")
            return
        print(f"processes / one-split: {medians['one-split'] / medians['processes']:.2f}x")
        weights = {n: np.load(os.path.join(folder, n + ".npz")) for n, *_ in setups}
        for other in ("one", "processes"):
            worst = max(float(np.max(np.abs(weights["one-split"][k] - weights[other][k]))
                              / (np.max(np.abs(weights["one-split"][k])) + 1e-12))
                        for k in weights["one-split"].files)
            print(f"weights after {args.warmup + args.steps} steps, {other} vs one-split: "
                  f"largest |difference| / largest |weight| of a tensor {worst:.3g}")


if __name__ == "__main__":
    main()
