"""Data-parallel training with mx.distributed (ring backend) on 127.0.0.1.

Two processes, each reading half of every global batch, must reach the weights of one process
that holds the whole batch. With BatchNorm, "the same global batch" means the same BatchNorm
groups: each process normalises its own 4 images, so the single process splits its 8 into two
micro-batches of 4 (``--micro-batches 2``). The processes are started directly with MLX_RANK and
MLX_HOSTFILE (``mlx.launch`` exits 0 even when a rank fails and busy-waits a core) under a
hard timeout, since a rank whose peer never comes blocks forever.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_training_data import make_digits_folder

from mlx_inception.training import checkpoint as checkpoints

# Every test starts processes that meet over mx.distributed on loopback.
pytestmark = pytest.mark.slow

TIMEOUT_SECONDS = 300
# Summing two gradients in another order could change the last bit of float32 results; the
# runs below agree exactly (measured maximum difference 0), the bound allows for a platform
# whose all-reduce adds in another order.
RELATIVE_TOLERANCE = 1e-6


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def train_command(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "mlx_inception", "train", "--quiet", "--json", "--no-compile",
        "--data", str(data / "train"), "--val", str(data / "val"), "--out", str(out),
        "--image-size", "75", "--batch-size", "8", "--epochs", "2", "--base-lr", "1e-6",
        "--reference-batch", "8", "--bn-momentum", "0.1", "--workers", "2", *extra,
    ]


def quiet_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_")}
    # One BLAS thread per process: two ranks on two cores, and the same arithmetic in each run.
    env.update(MKL_NUM_THREADS="1", OMP_NUM_THREADS="1")
    return env


def run_processes(commands: list[list[str]], envs: list[dict[str, str]], logs: Path):
    processes = []
    for index, (command, env) in enumerate(zip(commands, envs, strict=True)):
        log = open(logs / f"process{index}.log", "w")  # noqa: SIM115 (closed below)
        processes.append((subprocess.Popen(command, env=env, stdout=log, stderr=log), log))
    try:
        codes = [process.wait(timeout=TIMEOUT_SECONDS) for process, _ in processes]
    except subprocess.TimeoutExpired:
        for process, _ in processes:
            process.kill()
        codes = None
    finally:
        for process, log in processes:
            process.wait()
            log.close()
    texts = [(logs / f"process{i}.log").read_text() for i in range(len(commands))]
    if codes is None:
        pytest.fail(f"timed out after {TIMEOUT_SECONDS} s (a peer never connected?): {texts}")
    return codes, texts


def training_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    arrays, _ = checkpoints.load_checkpoint(run_dir / "last")
    return {k: np.array(v).astype(np.float64) for k, v in arrays.items()}


def test_two_processes_reach_the_weights_of_one_process_with_the_same_global_batch(tmp_path):
    data = make_digits_folder(tmp_path / "digits", 4, 4, 1)  # 16 images: 2 steps an epoch
    ports = free_ports(2)
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{port}"] for port in ports]))
    envs = []
    for rank in range(2):
        env = quiet_environment()
        env.update(MLX_RANK=str(rank), MLX_HOSTFILE=str(hostfile))
        envs.append(env)
    # Rank 1 is given its own --out only to show that it writes nothing there.
    outs = [tmp_path / "distributed", tmp_path / "rank1_writes_nothing"]
    codes, logs = run_processes([train_command(data, out) for out in outs], envs, tmp_path)
    assert codes == [0, 0], logs  # each rank's own exit code: mlx.launch would report 0
    assert not outs[1].exists()

    single = tmp_path / "single"
    codes, logs = run_processes(
        [train_command(data, single, "--micro-batches", "2")], [quiet_environment()], tmp_path
    )
    assert codes == [0], logs

    # Stopped after 3 of the 4 steps and resumed, still across two processes: the same run.
    stopped = tmp_path / "stopped"
    codes, logs = run_processes([train_command(data, stopped, "--max-steps", "3")] * 2, envs,
                                tmp_path)
    assert codes == [0, 0], logs
    resume = [sys.executable, "-m", "mlx_inception", "train", "--quiet", "--resume",
              str(stopped), "--max-steps", "0"]
    codes, logs = run_processes([resume, resume], envs, tmp_path)
    assert codes == [0, 0], logs
    straight, resumed = training_arrays(outs[0]), training_arrays(stopped)
    assert all(np.array_equal(straight[key], resumed[key]) for key in straight)

    distributed, alone = training_arrays(outs[0]), training_arrays(single)
    assert distributed.keys() == alone.keys()
    worst = 0.0
    for key, value in alone.items():
        scale = max(float(np.abs(value).max()), 1e-30)
        worst = max(worst, float(np.abs(distributed[key] - value).max()) / scale)
    assert worst <= RELATIVE_TOLERANCE, worst
    # Evaluation is sharded too (each rank scores its share, the counts are summed).
    records = [
        [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        for run in (outs[0], single)
    ]
    for a, b in zip(*records, strict=True):
        assert (a["train_loss"], a["val_top1"], a["val_loss"]) == pytest.approx(
            (b["train_loss"], b["val_top1"], b["val_loss"]), rel=RELATIVE_TOLERANCE)


@pytest.mark.parametrize("split", ["train", "val"])
def test_an_unreadable_image_stops_every_process_with_one_line(tmp_path, split):
    """One process cannot read one file: all stop at the same point instead of the others
    waiting forever in an all-reduce; the one with the file names it, rank 0 saves."""
    data = make_digits_folder(tmp_path / "digits", 4, 4, 2)
    broken = sorted((data / split / "digit_2").iterdir())[0]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ports = free_ports(2)
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{port}"] for port in ports]))
    envs = [{**quiet_environment(), "MLX_RANK": str(rank), "MLX_HOSTFILE": str(hostfile)}
            for rank in range(2)]
    out = tmp_path / "run"
    command = [*train_command(data, out), "--epochs", "1"]
    codes, logs = run_processes([command, command], envs, tmp_path)
    assert codes == [1, 1], logs
    errors = [log.strip().splitlines()[-1] for log in logs]
    assert all(error.startswith("error: ") and f"--resume {out}" in error for error in errors)
    naming = [error for error in errors if broken.name in error]
    assert len(naming) == 1, errors
    assert sum("another process could not read" in error for error in errors) == 1, errors
    state = json.loads((out / "last" / "trainer_state.json").read_text())
    if split == "val":  # stopped after the epoch's 2 steps, before its evaluation
        assert (state["step"], state["step_in_epoch"]) == (2, 2)
    else:
        assert state["step"] < 2
    checkpoints.load_checkpoint(out / "last")


def two_process_environments(tmp_path: Path) -> list[dict[str, str]]:
    hostfile = tmp_path / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{port}"] for port in free_ports(2)]))
    return [{**quiet_environment(), "MLX_RANK": str(rank), "MLX_HOSTFILE": str(hostfile)}
            for rank in range(2)]


def test_a_failure_on_rank_0_alone_stops_every_process(tmp_path):
    """Rank 0 alone checks (and writes) the run directory: when it refuses, the others stop
    too instead of waiting for it in the first collective."""
    data = make_digits_folder(tmp_path / "digits", 4, 4, 1)
    out = tmp_path / "run"
    (out / "checkpoints" / "step-00000001").mkdir(parents=True)
    (out / "last").symlink_to("checkpoints/step-00000001")
    command = train_command(data, out)
    codes, logs = run_processes([command, command], two_process_environments(tmp_path), tmp_path)
    assert codes == [1, 1], logs
    errors = [log.strip().splitlines()[-1] for log in logs]
    assert "already holds a run" in errors[0]
    assert errors[1] == "error: stopped: the first process (rank 0) failed; its error says why"


def test_processes_that_see_different_images_refuse_to_start(tmp_path):
    data = make_digits_folder(tmp_path / "digits", 4, 4, 1)
    other = tmp_path / "other"
    shutil.copytree(data, other)
    for path in sorted((other / "train" / "digit_3").iterdir())[:1]:
        path.rename(other / "train" / "digit_2" / f"moved_{path.name}")  # same count, not same
    commands = [train_command(data, tmp_path / "run"), train_command(other, tmp_path / "run")]
    codes, logs = run_processes(commands, two_process_environments(tmp_path), tmp_path)
    assert codes == [1, 1], logs
    for log in logs:
        assert log.strip().splitlines()[-1].startswith(
            "error: the processes disagree about the run: each must see the same training")
    assert not (tmp_path / "run" / "last").exists()


def ring_environment(tmp_path: Path, rank: int, hosts: int = 2, **extra: str) -> dict[str, str]:
    hostfile = tmp_path / "hosts.json"
    if not hostfile.exists():
        hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in free_ports(hosts)]))
    return {**quiet_environment(), "MLX_RANK": str(rank), "MLX_HOSTFILE": str(hostfile),
            **extra}


def one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


@pytest.mark.slow
def test_a_rank_whose_peer_never_starts_stops_at_the_deadline_with_one_line(tmp_path):
    env = ring_environment(tmp_path, 0, MLX_INCEPTION_DISTRIBUTED_TIMEOUT="3")
    command = [sys.executable, "-m", "mlx_inception", "train", "--data", str(tmp_path),
               "--out", str(tmp_path / "run")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert "did not form within 3 s" in line and "MLX_INCEPTION_DISTRIBUTED_TIMEOUT" in line


@pytest.mark.slow
def test_a_malformed_or_missing_hostfile_is_one_line(tmp_path):
    command = [sys.executable, "-m", "mlx_inception", "train", "--data", str(tmp_path),
               "--out", str(tmp_path / "run")]
    (tmp_path / "bad.json").write_text('[["127.0.0.1:')
    for hostfile, expected in ((tmp_path / "bad.json", "cannot join the data-parallel group"),
                               (tmp_path / "none.json", "does not exist")):
        env = {**quiet_environment(), "MLX_RANK": "0", "MLX_HOSTFILE": str(hostfile)}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and expected in one_error_line(result.stderr)


LOSES_ITS_PEER = """
import os
import mlx_inception
import mlx.core as mx
from mlx_inception.errors import InceptionError
from mlx_inception.training.distributed import init_group, peer_failures

group = init_group()
mx.eval(mx.distributed.all_sum(mx.ones(4), group=group))
if group.rank() == 1:
    os._exit(0)  # the peer vanishes without a word
try:
    with peer_failures():
        for _ in range(100):
            mx.eval(mx.distributed.all_sum(mx.ones(1 << 16), group=group))
except InceptionError as error:  # as the CLI reports it
    print(f"error: {error}")
    raise SystemExit(1)
"""


@pytest.mark.slow
def test_a_lost_peer_is_one_line(tmp_path):
    commands = [[sys.executable, "-c", LOSES_ITS_PEER]] * 2
    envs = [ring_environment(tmp_path, rank) for rank in range(2)]
    codes, texts = run_processes(commands, envs, tmp_path)
    assert codes == [1, 0]
    # MLX's ring backend writes its own "[ring] Socket N was closed by the peer" lines to
    # stderr from C++ before it raises; what this package adds is the one line at the end.
    ours = [line for line in texts[0].splitlines() if not line.startswith("[ring]")]
    assert "Traceback" not in texts[0]
    assert "a data-parallel peer was lost" in one_error_line("\n".join(ours))
