"""The benchmark's code paths, on tiny sizes: what is measured and reported, not how fast.

The real measurements (299 px, batches 1, 8 and 16) take minutes; here every worker runs at
75 px with batch 1 or 2, and the summaries are checked on made-up times. Workers run in this
process (the command's fresh processes are the slow tier), so their resident-set growth may be
nothing: memory is checked against MLX's allocator, which counts every array it handed out.
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import time

import pytest

from mlx_inception import benchmark
from mlx_inception.benchmark import Case, Measurement
from mlx_inception.benchmark_worker import PeakMemory, run_worker, timed

TINY = {"iterations": 2, "warmup": 1, "threads": 2, "budget_s": 60.0, "batch": 1, "size": 75,
        "dtype": "float32"}


def test_timed_runs_the_warmup_untimed_then_times_each_call():
    # Two warmup calls of 50 ms, then three of 10 ms; a sixth call would raise StopIteration.
    sleeps = iter([0.05, 0.05, 0.01, 0.01, 0.01])
    start = time.perf_counter()
    times = timed(lambda: time.sleep(next(sleeps)), iterations=3, warmup=2, budget_s=60)
    elapsed = time.perf_counter() - start
    assert list(sleeps) == [] and len(times) == 3
    # sleep() never returns early, so each timed call lasts 10 ms at least; however loaded the
    # machine, the three times fit in the wall time left after the two 50 ms warmup calls.
    assert min(times) >= 0.01
    assert sum(times) <= elapsed - 0.1


def test_timed_stops_when_its_budget_is_spent_but_times_one_call_at_least():
    times = timed(lambda: time.sleep(0.02), iterations=100, warmup=0, budget_s=0.001)
    assert len(times) == 1 and times[0] >= 0.02


def test_a_call_slower_than_a_quarter_of_the_budget_is_warmed_up_once_only():
    calls = []
    times = timed(lambda: (calls.append(1), time.sleep(0.02)), iterations=1, warmup=3,
                  budget_s=0.04)
    assert len(calls) == 2 and len(times) == 1


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux /proc only")
def test_peak_memory_counts_what_the_task_allocated():
    memory = PeakMemory()
    # Fresh pages from the kernel: a malloc'd block could reuse memory that earlier tests freed
    # and that is still resident (the package keeps freed blocks on the heap, _blas.tune_malloc).
    block = mmap.mmap(-1, 200 * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1  # every page touched, nothing else allocated
    block.close()
    assert memory.exact
    assert 190 <= memory.peak_mib() <= 400


@pytest.mark.parametrize("framework", ["mlx", "mlx-fast"])
def test_mlx_inference_worker_reports_times_memory_device_and_blas(framework):
    start = time.perf_counter()
    result = run_worker({**TINY, "framework": framework, "task": "inference"})
    elapsed = time.perf_counter() - start
    assert "error" not in result, result.get("error")
    assert len(result["times"]) == 2 and 0 < sum(result["times"]) <= elapsed  # in seconds
    assert result["peak_exact"] == os.path.exists("/proc/self/clear_refs")
    assert isinstance(result["peak_mib"], float)
    # The network's 27.2 million float32 parameters (aux head included) are 103.75 MiB, all
    # held at once; MLX's allocator counts them whatever this process held before.
    assert result["allocator_peak_mib"] >= 100
    assert result["device"].startswith("Device(")
    assert result["blas"] and result["versions"]["mlx"]


def test_mlx_training_worker_runs_a_training_step():
    result = run_worker({**TINY, "batch": 2, "framework": "mlx", "task": "training"})
    assert "error" not in result, result.get("error")
    assert len(result["times"]) == 2
    # Without the aux head (75 px) the weights are 91.05 MiB; after a step SGD holds a momentum
    # buffer beside each of the 90.92 MiB of trainable ones: 181.97 MiB allocated at once.
    assert result["allocator_peak_mib"] >= 180


@pytest.mark.slow  # builds torchvision's full network with its own init
def test_torch_worker_reports_its_blas_and_threads():
    pytest.importorskip("torchvision")
    result = run_worker({**TINY, "batch": 2, "iterations": 1, "warmup": 0, "framework": "torch",
                         "task": "training"})
    assert "error" not in result, result.get("error")
    assert len(result["times"]) == 1
    assert "BLAS" in result["blas"] and result["threads"] == 2


def test_an_impossible_case_is_reported_not_raised():
    result = run_worker({**TINY, "size": 20, "framework": "mlx", "task": "inference"})
    assert result["error"] and "times" not in result


def fake_runner(log: list):
    def runner(framework, case, iterations, warmup, threads, budget_s):
        log.append((framework, case.name))
        seconds = {"torch": 0.2, "mlx": 0.25, "mlx-fast": 0.1}[framework]
        return {"times": [seconds * case.batch] * iterations, "peak_mib": 100.0}
    return runner


def test_rounds_alternate_the_order_of_the_frameworks():
    log = []
    case = Case("inference", 1, 299)
    benchmark.run_benchmark([case], ["torch", "mlx-fast"], rounds=2, iterations=1,
                            runner=fake_runner(log))
    assert [framework for framework, _ in log] == ["torch", "mlx-fast", "mlx-fast", "torch"]


def test_training_cases_skip_the_inference_only_fast_path():
    log = []
    benchmark.run_benchmark([Case("training", 16, 75)], ["torch", "mlx", "mlx-fast"], rounds=1,
                            iterations=1, runner=fake_runner(log))
    assert [framework for framework, _ in log] == ["torch", "mlx"]


def test_summary_gives_medians_and_ratios_to_torchvision():
    case = Case("inference", 8, 299)
    measurements = [
        Measurement("torch", case, 0, times=[1.0, 2.0, 4.0], peak_mib=400.0),
        Measurement("mlx-fast", case, 0, times=[0.5, 1.0, 8.0], peak_mib=300.0),
        Measurement("torch", case, 1, times=[2.0], peak_mib=410.0),
        Measurement("mlx-fast", case, 1, times=[2.0], peak_mib=320.0),
    ]
    rows = {row.framework: row for row in benchmark.summarize(measurements)}
    assert rows["torch"].images_per_s == 8 / 2.0  # median of 1, 2, 4, 2
    assert rows["mlx-fast"].images_per_s == 8 / 1.5  # median of 0.5, 1, 8, 2
    assert rows["mlx-fast"].ratio == pytest.approx(2.0 / 1.5)
    assert rows["mlx-fast"].round_ratios == [pytest.approx(2.0), pytest.approx(1.0)]
    assert rows["mlx-fast"].memory_ratio == pytest.approx(320 / 410)
    assert rows["torch"].ratio is None


def test_a_framework_that_failed_everywhere_shows_its_error_in_the_table():
    case = Case("inference", 1, 299, "float16")
    rows = benchmark.summarize([
        Measurement("torch", case, 0, error="RuntimeError: not implemented for 'Half'"),
        Measurement("mlx", case, 0, times=[1.0], peak_mib=10.0),
    ])
    table = benchmark.format_table(rows)
    assert "RuntimeError: not implemented for 'Half'" in table
    assert rows[1].ratio is None and rows[1].images_per_s == 1.0


def test_unknown_frameworks_are_refused():
    with pytest.raises(benchmark.BenchmarkError, match="choose from"):
        benchmark.run_benchmark([Case("inference", 1, 75)], ["tensorflow"], rounds=1)


@pytest.mark.slow  # the benchmark itself: three fresh interpreters
def test_bench_command_runs_both_frameworks_in_fresh_processes_and_prints_json(tmp_path):
    pytest.importorskip("torchvision")
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "mlx_inception", "bench", "--batch-sizes", "1", "--image-size",
         "75", "--dtypes", "float32", "--train-batch", "0", "--rounds", "1", "--iterations", "1",
         "--warmup", "0", "--threads", "2", "--json", "--output", str(output)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = {row["framework"]: row for row in report["rows"]}
    assert set(rows) == {"torch", "mlx", "mlx-fast"}
    assert rows["mlx-fast"]["ratio"] > 0 and rows["torch"]["images_per_s"] > 0
    # Each worker builds the network (103.75 MiB of float32 weights) after its peak is reset, in
    # a fresh process that held none of it: its resident set grows by the weights at least.
    assert all(row["peak_mib"] >= 100 for row in rows.values()), rows
    environment = report["environment"]
    assert environment["mlx_blas"] and environment["mlx_device"].startswith("Device(")
    assert "BLAS" in environment["torch_blas"] and environment["threads"] == 2
    assert "round 1/1: infer b1 75px float32: torch" in done.stderr
    saved = json.loads(output.read_text())
    assert len(saved["measurements"]) == 3


def run_bench(capsys, *argv: str) -> tuple[int, str, str]:
    from mlx_inception import cli

    status = cli.main(["bench", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_bench_help_shows_no_empty_defaults(capsys):
    with pytest.raises(SystemExit):
        run_bench(capsys, "--help")
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default: 3)" in text  # --rounds: real defaults are still shown


@pytest.mark.parametrize("flag, value, message", [
    ("--rounds", "0", "--rounds must be at least 1, not 0"),
    ("--iterations", "-1", "--iterations must be at least 1, not -1"),
    ("--batch-sizes", "0", "--batch-sizes must be at least 1, not 0"),
    ("--image-size", "32", "--image-size must be at least 75, not 32"),
])
def test_counts_that_cannot_be_measured_are_one_line_errors(capsys, monkeypatch, flag, value,
                                                            message):
    monkeypatch.setattr(benchmark, "run_benchmark", _never_measure)
    assert run_bench(capsys, flag, value) == (1, "", f"error: {message}\n")


def _never_measure(*args, **kwargs):
    raise AssertionError("measured before the arguments were checked")


def test_an_output_path_that_cannot_be_written_is_refused_before_measuring(
    capsys, monkeypatch, tmp_path
):
    monkeypatch.setattr(benchmark, "run_benchmark", _never_measure)
    (tmp_path / "afile").write_text("")
    status, out, err = run_bench(capsys, "--output", str(tmp_path / "afile" / "results.json"))
    assert (status, out) == (1, "")
    assert err == (f"error: cannot write {tmp_path}/afile/results.json: {tmp_path}/afile is a "
                   "file, not a folder\n")


def test_results_are_printed_before_the_file_is_written_so_a_failed_write_loses_nothing(
    capsys, monkeypatch, tmp_path
):
    output = tmp_path / "out" / "results.json"

    def measure_then_lose_the_folder(cases, frameworks, **kwargs):
        # The folder checked at the start is gone by the end (deleted, replaced by a file).
        (tmp_path / "out").rmdir()
        (tmp_path / "out").write_text("")
        return [Measurement("mlx", cases[0], 0, times=[0.5], peak_mib=10.0)]

    (tmp_path / "out").mkdir()
    monkeypatch.setattr(benchmark, "run_benchmark", measure_then_lose_the_folder)
    status, out, err = run_bench(capsys, "--frameworks", "mlx", "--batch-sizes", "1",
                                 "--dtypes", "float32", "--train-batch", "0", "--json",
                                 "--output", str(output))
    assert status == 1
    [row] = json.loads(out)["rows"]
    assert row["images_per_s"] == 2.0
    assert err == f"error: cannot write {output}: {tmp_path}/out is a file, not a folder\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
