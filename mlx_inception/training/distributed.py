"""Data parallelism with ``mx.distributed``: one group, averaged gradients, rank 0 writes.

``mx.distributed.init()`` reads the launcher's environment (the ring backend's ``MLX_RANK`` and
``MLX_HOSTFILE``, or MPI's) and returns a group of size 1 when there is none, so the same
command runs alone or as one process of many. Each process reads its own share of every global
batch (``data.loader.BatchLoader``), computes gradients on it, and ``average_tree`` all-reduces
them; every process then applies the same update to the same weights.

Whatever one process does alone (rank 0 writing files, a process failing to read an image) is
followed by an agreement: every process learns, at the same point, whether any failed, so that
none goes on to a collective a failed process will never join; all stop instead.

Joining the group has a deadline (``MLX_INCEPTION_DISTRIBUTED_TIMEOUT`` seconds, 300 by default,
0 for none): MLX's ``init`` holds the interpreter while it waits for its peers, so a small
watchdog process says why and stops this one when a peer never starts. A peer lost later (the
ring backend's "connection to a peer was lost") is one line too (``peer_failures``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

from ..errors import ImageError, InceptionError
from .recipe import ConfigError

TIMEOUT_VARIABLE = "MLX_INCEPTION_DISTRIBUTED_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 300.0
# What mlx.launch, mpirun and MLX's other backends set: without any, the run is alone.
LAUNCHER_VARIABLES = ("MLX_RANK", "MLX_HOSTFILE", "MLX_JACCL_COORDINATOR", "MLX_IBV_DEVICES",
                      "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
# The watchdog: exits quietly when its stdin closes (this process joined, or died); otherwise,
# after the deadline, prints the message and ends this process.
_WATCHDOG = (
    "import os, select, signal, sys\n"
    "ready, _, _ = select.select([sys.stdin], [], [], float(sys.argv[2]))\n"
    "if not ready:\n"
    "    sys.stderr.write(sys.argv[3] + '\\n'); sys.stderr.flush()\n"
    "    os.kill(int(sys.argv[1]), signal.SIGTERM)\n"
)


def distributed_timeout() -> float:
    """Return the seconds joining the group may take (``MLX_INCEPTION_DISTRIBUTED_TIMEOUT``)."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"{TIMEOUT_VARIABLE}={text!r:.40} is not a number of seconds (0: no "
                          "deadline)")
    return seconds


def init_group(backend: str = "any") -> mx.distributed.Group:
    """Return the process group the launcher set up (size 1 when run alone).

    Raises ConfigError (one line) when the launcher's settings are unusable (a hostfile that
    is missing or not MLX's JSON); ends the process with one line on stderr when the group has
    not formed within ``distributed_timeout()`` seconds.
    """
    if not any(name in os.environ for name in LAUNCHER_VARIABLES):
        return mx.distributed.init(strict=False, backend=backend)
    hostfile = os.environ.get("MLX_HOSTFILE")
    where = f"rank {os.environ.get('MLX_RANK', '?')}" + (f", hostfile {hostfile}" if hostfile
                                                         else "")
    if hostfile and not os.path.isfile(hostfile):
        raise ConfigError(f"MLX_HOSTFILE={hostfile} does not exist: pass the hostfile "
                          "mlx.launch wrote (or --hostfile to mlx.launch)")
    seconds = distributed_timeout()
    message = (
        f"error: the data-parallel group did not form within {seconds:g} s ({where}): a peer "
        f"never started or cannot be reached; start every process, or set {TIMEOUT_VARIABLE} "
        "(seconds, 0: no deadline)"
    )
    with _deadline(seconds, message):
        try:
            return mx.distributed.init(strict=False, backend=backend)
        except RuntimeError as error:
            raise ConfigError(
                f"cannot join the data-parallel group ({where}): {_first_line(error)}"
            ) from None


@contextlib.contextmanager
def _deadline(seconds: float, message: str) -> Iterator[None]:
    """Run the block under a watchdog process that ends this one after ``seconds``."""
    if seconds == 0:
        yield
        return
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(seconds), message],
        stdin=subprocess.PIPE,
    )
    try:
        yield
    finally:
        watchdog.stdin.close()
        watchdog.wait()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


# How MLX's backends name themselves in their errors.
_BACKEND_TAGS = ("[ring]", "[mpi]", "[jaccl]", "[nccl]", "[distributed]")


@contextlib.contextmanager
def peer_failures() -> Iterator[None]:
    """Turn a collective's failure (a peer lost, a broken connection) into one InceptionError."""
    try:
        yield
    except RuntimeError as error:
        if not any(tag in str(error) for tag in _BACKEND_TAGS):
            raise
        raise InceptionError(
            f"a data-parallel peer was lost ({_first_line(error)}): every process stops; once "
            "all machines are up, continue with --resume RUN_DIR"
        ) from None


def average_tree(tree: Any, group: mx.distributed.Group) -> Any:
    """Return the element-wise mean of ``tree`` over the processes of ``group``.

    Arrays are concatenated into ~32 MiB messages (``mlx.nn.average_gradients``) so Inception's
    ~600 parameter arrays cost a handful of all-reduces, not hundreds.
    """
    if group.size() == 1:
        return tree
    return nn.average_gradients(tree, group=group)


def sum_scalars(values: list[float], group: mx.distributed.Group) -> list[float]:
    """Return the sums of a few Python numbers over all processes (counts, totals)."""
    if group.size() == 1:
        return [float(v) for v in values]
    total = mx.distributed.all_sum(mx.array(values, dtype=mx.float32), group=group)
    return [float(v) for v in total.tolist()]


def same_everywhere(values: list[int], group: mx.distributed.Group) -> bool:
    """Return whether every process holds the same ``values`` (small integers: counts, pieces
    of a digest)."""
    if group.size() == 1:
        return True
    local = mx.array(values, dtype=mx.int32)
    highest = mx.distributed.all_max(local, group=group)
    lowest = mx.distributed.all_min(local, group=group)
    return bool(mx.array_equal(highest, lowest).item())


def require_same_run(group: mx.distributed.Group, values: list[int]) -> None:
    """Raise ``ConfigError`` unless every process holds the same ``values``: where it stands
    in the run and what it sees of the data."""
    if not same_everywhere(values, group):
        raise ConfigError(
            "the processes disagree about the run: each must see the same training and "
            "validation images (the same folders on every machine) and, to resume, the "
            "same checkpoint (copy RUN_DIR from rank 0 to the others)"
        )


def broadcast_tree(tree: Any, group: mx.distributed.Group) -> Any:
    """Return rank 0's copy of ``tree`` on every process.

    Seeded initialisation already gives every process the same weights; copying rank 0's makes
    that hold even across machines with different MLX builds.
    """
    if group.size() == 1:
        return tree
    keep = group.rank() == 0
    return tree_map(
        lambda a: mx.distributed.all_sum(a if keep else mx.zeros_like(a), group=group), tree
    )


def any_process(group: mx.distributed.Group, *flags: bool) -> list[bool]:
    """Return, for each flag, whether any process raised it (one all-reduce for all)."""
    if group.size() == 1:
        return [bool(flag) for flag in flags]
    return [total > 0 for total in sum_scalars([float(f) for f in flags], group)]


def on_main(group: mx.distributed.Group, work: Callable[[], Any]) -> None:
    """Run ``work`` on rank 0 only (writing files, logging); if it fails, every process stops
    with it, instead of waiting forever in its next collective for rank 0."""
    failure = None
    if group.rank() == 0:
        try:
            work()
        except Exception as error:
            failure = error
    (failed,) = any_process(group, failure is not None)
    if failure is not None:
        raise failure
    if failed:
        raise InceptionError("stopped: the first process (rank 0) failed; its error says why")


def raise_any_failure(group: mx.distributed.Group, failure: Exception | None, what: str) -> None:
    """Raise ``failure``; where another process failed instead, raise an error saying so.

    Every process calls this at the same point; ``what`` names what an ``ImageError`` could not
    read ("an image of this batch").
    """
    image_failed, other_failed = any_process(
        group,
        isinstance(failure, ImageError),
        failure is not None and not isinstance(failure, ImageError),
    )
    if failure is not None:
        raise failure
    if image_failed:
        raise ImageError(f"another process could not read {what} (its own error names the file)")
    if other_failed:
        raise InceptionError("stopped: another process failed; its error says why")
