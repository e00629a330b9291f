"""Work off the GUI thread: a queue per lane, one thread per lane, the latest request wins.

MLX arrays belong to the thread that made them, so everything that touches the network runs on
one long-lived "compute" thread. Weights downloads (and their conversion) run on a "download"
thread and web images and file exports on an "io" thread, so that a slow download holds up
neither looking at the current image nor opening another one from the web. Each request has a
kind ("analyse", "gradcam", "weights", ...) and a generation number; a queued request is
skipped when a newer one of its kind exists, and the GUI ignores results of any but the newest.
A job that reports progress is stopped at its next report once it is no longer wanted. Results
come back as Qt signals, delivered on the GUI thread.

Closing never waits for a job. ``shutdown`` makes every request stale and returns at once; each
lane finishes the job it is in and ends. The lanes are not daemon threads: the interpreter
waits for them when the program ends, so a job never dies inside MLX at interpreter shutdown
(MLX's C++ threads and streams are torn down then, and a thread still using them aborts the
process: "terminate called without an active exception"). A lane also ends by itself once the
main thread has ended, so a program that never shut its worker down still exits.
"""

from __future__ import annotations

import inspect
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from PySide6.QtCore import QObject, Signal

from mlx_inception.errors import InceptionError

COMPUTE = "compute"
IO = "io"
DOWNLOAD = "download"
# How often an idle lane looks whether the main thread has ended.
_POLL_S = 0.2


class Cancelled(Exception):
    """Raised from a job's progress callback once its request is stale or the worker stopped."""


@dataclass
class Job:
    kind: str
    generation: int
    function: Callable[..., Any]
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def error_message(error: BaseException) -> str:
    """Return the one line the window shows for a failed job."""
    if isinstance(error, InceptionError):
        return str(error)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class _Lane:
    """One thread running jobs from a queue in order (not a daemon: see the module docstring)."""

    def __init__(self, name: str, run: Callable[[Job], None], on_exit: Callable[[], None]):
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._run = run
        self._on_exit = on_exit
        self.thread = threading.Thread(target=self._loop, name=f"mlx-inception-{name}")
        self.thread.start()

    def put(self, job: Job | None) -> None:
        self._queue.put(job)

    def _loop(self) -> None:
        main = threading.main_thread()
        try:
            while main.is_alive():
                try:
                    job = self._queue.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                if job is None:
                    break
                self._run(job)
        finally:
            self._on_exit()
            # MLX keeps per-thread streams; freeing them here, on their own thread, lets the
            # process exit cleanly (left to interpreter shutdown it can abort).
            mx.clear_streams()


class Worker(QObject):
    """Runs jobs on the compute, download and io threads and reports back with signals.

    ``finished(kind, generation, result)``, ``failed(kind, generation, message)``,
    ``progress(kind, generation, fraction, text)`` (fraction < 0: unknown),
    ``busy_changed(busy, description)`` and ``done(kind, generation)`` after every job, stale
    ones included (it arrives after that job's ``finished`` or ``failed``). After ``shutdown``
    nothing is reported.

    Give it no Qt parent: the lanes hold it, so it lives until the last job has ended even when
    the window that made it is gone.
    """

    finished = Signal(str, int, object)
    done = Signal(str, int)
    failed = Signal(str, int, str)
    progress = Signal(str, int, float, str)
    busy_changed = Signal(bool, str)

    def __init__(self, on_compute_exit: Callable[[], None] | None = None,
                 parent: QObject | None = None):
        super().__init__(parent)
        self._lock = threading.Lock()
        self._latest: dict[str, int] = {}
        self._counter = 0
        self._pending = 0
        self._stopped = False
        self._lanes = {
            COMPUTE: _Lane(COMPUTE, self._execute, on_compute_exit or (lambda: None)),
            DOWNLOAD: _Lane(DOWNLOAD, self._execute, lambda: None),
            IO: _Lane(IO, self._execute, lambda: None),
        }

    # --- the GUI side -------------------------------------------------------------------------

    def submit(self, kind: str, function: Callable[..., Any], *args: Any, lane: str = COMPUTE,
               description: str = "", **kwargs: Any) -> int:
        """Queue ``function(*args, **kwargs)``; return its generation (newest of its kind).

        A function with a ``progress`` parameter is given a callback ``progress(fraction, text)``;
        it raises ``Cancelled`` once the request is stale, which stops the job there.
        """
        if self._stopped:
            raise RuntimeError("the worker has been shut down")
        with self._lock:
            self._counter += 1
            generation = self._counter
            self._latest[kind] = generation
            self._pending += 1
            first = self._pending == 1
        if "progress" in _parameters(function):
            kwargs["progress"] = self._reporter(kind, generation)
        self._lanes[lane].put(Job(kind, generation, function, args, kwargs, description))
        if first:
            self.busy_changed.emit(True, description)
        return generation

    def is_current(self, kind: str, generation: int) -> bool:
        """Return True if ``generation`` is the newest request of ``kind``."""
        with self._lock:
            return self._latest.get(kind) == generation

    def cancel(self, kind: str) -> None:
        """Make every queued or running request of ``kind`` stale (its result is dropped)."""
        with self._lock:
            self._counter += 1
            self._latest[kind] = self._counter

    def idle(self) -> bool:
        """Return True when no job is queued or running."""
        with self._lock:
            return self._pending == 0

    def shutdown(self) -> None:
        """Make every request stale and let each thread end after its job; never waits.

        Jobs still queued are skipped, a job that reports progress stops at its next report,
        and nothing more is reported. ``wait`` waits for the threads.
        """
        if self._stopped:
            return
        with self._lock:
            self._stopped = True
            for kind in list(self._latest):
                self._counter += 1
                self._latest[kind] = self._counter
        for lane in self._lanes.values():
            lane.put(None)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for every thread to end; return True if they have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for lane in self._lanes.values():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            lane.thread.join(left)
        return not any(lane.thread.is_alive() for lane in self._lanes.values())

    # --- the worker side ----------------------------------------------------------------------

    def _reporter(self, kind: str, generation: int) -> Callable[..., None]:
        def report(fraction: float, text: str = "") -> None:
            if not self.is_current(kind, generation):
                raise Cancelled(f"{kind} request {generation} is no longer wanted")
            self.progress.emit(kind, generation, float(fraction), text)

        return report

    def _execute(self, job: Job) -> None:
        try:
            if not self.is_current(job.kind, job.generation):
                return  # a newer request of this kind is queued: skip the stale one
            if job.description and not self._stopped:
                self.busy_changed.emit(True, job.description)
            try:
                result = job.function(*job.args, **job.kwargs)
            except Exception as error:  # every failure is shown in the window, none crashes it
                if self._stopped:
                    return
                if not isinstance(error, InceptionError | ValueError | Cancelled):
                    traceback.print_exc(file=sys.stderr)
                self.failed.emit(job.kind, job.generation, error_message(error))
            else:
                if not self._stopped:
                    self.finished.emit(job.kind, job.generation, result)
        finally:
            with self._lock:
                self._pending -= 1
                idle = self._pending == 0
            if not self._stopped:
                self.done.emit(job.kind, job.generation)
                if idle:
                    self.busy_changed.emit(False, "")


def _parameters(function: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()
