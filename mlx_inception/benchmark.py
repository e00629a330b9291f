"""This project against torchvision's ``inception_v3``, measured side by side in one run.

Every measurement runs in a fresh process (:mod:`mlx_inception.benchmark_worker`): the two
frameworks never share a process (each would keep the other's BLAS threads spinning) and each
peak memory is its own. Rounds alternate the order of the frameworks, so a change of load on the
machine hits both; the report gives medians over all timed calls, the ratio of each MLX
variant's median throughput to torchvision's, and the spread of the per-round ratios.

Frameworks: ``torch`` (torchvision, NCHW, oneDNN), ``mlx`` (the plain model, as
``mlx_inception.load`` returns it) and ``mlx-fast`` (:func:`~mlx_inception.fast.
optimize_for_inference`: BatchNorm folded, parallel 1x1 convolutions fused, ``mx.compile`` on a
GPU). Training uses the plain model (SGD with momentum, torchvision's main +
0.4 x aux loss at 299 px; no aux head below that, as the head needs a 17x17 grid).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InceptionError

FRAMEWORKS = ("torch", "mlx", "mlx-fast")
WORKER = Path(__file__).with_name("benchmark_worker.py")
# Run the worker by path without putting the package directory on sys.path (its folder names
# would shadow top-level modules) and without importing the package in torch's process.
_BOOT = (
    "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


class BenchmarkError(InceptionError):
    """A benchmark could not run (a worker crashed or produced no result)."""


@dataclass(frozen=True)
class Case:
    """One thing to measure: inference or a training step, at a batch, size and dtype."""

    task: str  # "inference" | "training"
    batch: int
    size: int
    dtype: str = "float32"

    @property
    def name(self) -> str:
        kind = "infer" if self.task == "inference" else "train"
        return f"{kind} b{self.batch} {self.size}px {self.dtype}"

    def frameworks(self, wanted: Iterable[str]) -> list[str]:
        """Return the frameworks that apply: the fused fast path is inference-only."""
        return [f for f in wanted if not (self.task == "training" and f == "mlx-fast")]


def default_cases(
    batch_sizes: Iterable[int] = (1, 8),
    image_size: int = 299,
    dtypes: Iterable[str] = ("float32", "float16", "bfloat16"),
    train_batch: int | None = 16,
    train_sizes: Iterable[int] = (299, 75),
) -> list[Case]:
    """Return the issue's cases: inference per batch and dtype, then the training steps."""
    cases = [Case("inference", b, image_size, d) for d in dtypes for b in batch_sizes]
    if train_batch:
        cases += [Case("training", train_batch, s) for s in train_sizes]
    return cases


@dataclass
class Measurement:
    """One worker's result: seconds per call, or why there are none."""

    framework: str
    case: Case
    round: int
    times: list[float] = field(default_factory=list)
    peak_mib: float | None = None
    peak_exact: bool = False
    allocator_peak_mib: float | None = None
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def run_worker_process(
    framework: str, case: Case, iterations: int, warmup: int, threads: int, budget_s: float,
    timeout_s: float = 1800,
) -> dict[str, Any]:
    """Return the JSON result of one measurement run in a fresh Python process."""
    spec = {"framework": framework, "iterations": iterations, "warmup": warmup,
            "threads": threads, "budget_s": budget_s, **asdict(case)}
    env = dict(os.environ)
    # The same thread count for every BLAS and OpenMP runtime either framework may load.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    command = [sys.executable, "-c", _BOOT, str(WORKER), json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"worker exited with status {done.returncode}: {detail[:300]}"}
    return json.loads(lines[-1])


Runner = Callable[..., dict[str, Any]]


def run_benchmark(
    cases: list[Case],
    frameworks: Iterable[str] = FRAMEWORKS,
    rounds: int = 3,
    iterations: int = 5,
    warmup: int = 2,
    threads: int | None = None,
    budget_s: float = 60.0,
    progress: Callable[[str], None] | None = None,
    runner: Runner = run_worker_process,
) -> list[Measurement]:
    """Return every measurement: ``rounds`` x cases x frameworks, frameworks interleaved.

    Round r runs the frameworks in order, reversed on odd rounds, case by case, so both see the
    same machine state. ``threads`` (default: all cores) is given to torch and every BLAS.
    """
    threads = threads or os.cpu_count() or 1
    unknown = sorted(set(frameworks) - set(FRAMEWORKS))
    if unknown:
        raise BenchmarkError(
            f"unknown framework {unknown[0]!r}: choose from {', '.join(FRAMEWORKS)}"
        )
    measurements = []
    for round_index in range(rounds):
        for case in cases:
            order = case.frameworks(frameworks)
            if round_index % 2:
                order = order[::-1]
            for framework in order:
                if progress:
                    progress(f"round {round_index + 1}/{rounds}: {case.name}: {framework}")
                result = runner(framework, case, iterations, warmup, threads, budget_s)
                measurements.append(Measurement(
                    framework=framework, case=case, round=round_index,
                    times=list(result.get("times", [])), peak_mib=result.get("peak_mib"),
                    peak_exact=bool(result.get("peak_exact")),
                    allocator_peak_mib=result.get("allocator_peak_mib"),
                    error=result.get("error"),
                    info={k: result[k] for k in ("versions", "device", "blas", "threads",
                                                 "load_after", "python") if k in result},
                ))
    return measurements


@dataclass
class Row:
    """Medians of one case and framework over all rounds, and the ratio to torchvision."""

    case: Case
    framework: str
    images_per_s: float | None
    round_images_per_s: list[float]
    peak_mib: float | None
    allocator_peak_mib: float | None
    ratio: float | None = None
    round_ratios: list[float] = field(default_factory=list)
    memory_ratio: float | None = None
    calls: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["case"] = self.case.name
        return data


def summarize(measurements: list[Measurement]) -> list[Row]:
    """Return one row per case and framework, with medians and ratios to torchvision."""
    rows: list[Row] = []
    keys = list(dict.fromkeys((m.case, m.framework) for m in measurements))
    for case, framework in keys:
        runs = [m for m in measurements if m.case == case and m.framework == framework]
        times = [t for m in runs for t in m.times]
        errors = [m.error for m in runs if m.error]
        peaks = [m.peak_mib for m in runs if m.peak_mib is not None and not m.error]
        allocator = [m.allocator_peak_mib for m in runs if m.allocator_peak_mib is not None]
        rows.append(Row(
            case=case, framework=framework,
            images_per_s=case.batch / statistics.median(times) if times else None,
            round_images_per_s=[case.batch / statistics.median(m.times) for m in runs if m.times],
            peak_mib=max(peaks) if peaks else None,
            allocator_peak_mib=max(allocator) if allocator else None,
            calls=len(times), error=errors[0] if errors and not times else None,
        ))
    by_key = {(r.case, r.framework): r for r in rows}
    for row in rows:
        torch_row = by_key.get((row.case, "torch"))
        if row.framework == "torch" or torch_row is None:
            continue
        if row.images_per_s and torch_row.images_per_s:
            row.ratio = row.images_per_s / torch_row.images_per_s
        if row.peak_mib and torch_row.peak_mib:
            row.memory_ratio = row.peak_mib / torch_row.peak_mib
        mine = _per_round(measurements, row.case, row.framework)
        theirs = _per_round(measurements, row.case, "torch")
        row.round_ratios = [mine[r] / theirs[r] for r in sorted(mine) if r in theirs]
    return rows


def _per_round(measurements: list[Measurement], case: Case, framework: str) -> dict[int, float]:
    return {m.round: case.batch / statistics.median(m.times) for m in measurements
            if m.case == case and m.framework == framework and m.times}


def environment(measurements: list[Measurement], threads: int) -> dict[str, Any]:
    """Return the hardware, versions, BLAS and MLX device the measurements ran with."""
    info: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.system()} {platform.machine()}",
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    for m in measurements:
        prefix = "torch" if m.framework == "torch" else "mlx"
        for key in ("versions", "device", "blas"):
            if key in m.info:
                if key == "versions":
                    info.update(m.info["versions"])
                else:
                    info.setdefault(f"{prefix}_{key}", m.info[key])
    loads = [m.info["load_after"] for m in measurements if m.info.get("load_after") is not None]
    if loads:
        info["load_during"] = [min(loads), max(loads)]
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                  capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            pass
    return platform.processor() or "unknown"


def _number(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def format_table(rows: list[Row]) -> str:
    """Return the rows as a Markdown table: img/s, ratio to torchvision, spread, peak memory."""
    lines = [
        "| case | framework | img/s (median) | vs torchvision | per-round ratios | "
        "peak MiB | memory vs torchvision |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for row in rows:
        if row.error:
            lines.append(f"| {row.case.name} | {row.framework} | {row.error} | | | | |")
            continue
        spread = (f"{min(row.round_ratios):.2f}-{max(row.round_ratios):.2f}"
                  if row.round_ratios else "-")
        lines.append(
            f"| {row.case.name} | {row.framework} | {_number(row.images_per_s)} | "
            f"{_number(row.ratio, suffix='x')} | {spread} | {_number(row.peak_mib, 0)} | "
            f"{_number(row.memory_ratio, suffix='x')} |"
        )
    return "\n".join(lines)


def format_environment(info: dict[str, Any]) -> str:
    """Return the environment as the few lines printed above the table."""
    load = info.get("load_during")
    return "\n".join([
        f"{info['date']}, {info['machine']}, {info['cpu']}, {info['cores']} cores, "
        f"{info['threads']} threads per framework, Python {info['python']}",
        f"MLX {info.get('mlx', '?')} on {info.get('mlx_device', '?')}, BLAS: "
        f"{info.get('mlx_blas', '?')}",
        f"torch {info.get('torch', '-')}, torchvision {info.get('torchvision', '-')}: "
        f"{info.get('torch_blas', 'not measured')}",
        "load average during the run: " + (f"{load[0]:.2f}-{load[1]:.2f}" if load else "-"),
    ])
