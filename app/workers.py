"""Work off the GUI thread: a queue per lane, one thread per lane, the latest request wins.

MLX arrays belong to the thread that made them, so everything that touches the network runs on
one long-lived "compute" thread; downloads and file exports run on an "io" thread so that a slow
download never holds up looking at the current image. Each request has a kind ("analyse",
"gradcam", "weights", ...) and a generation number; a queued request is skipped when a newer one
of its kind exists, and the GUI ignores results of any but the newest. Results come back as Qt
signals, delivered on the GUI thread.
"""

from __future__ import annotations

import inspect
import queue
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from PySide6.QtCore import QObject, Signal

from mlx_inception.errors import InceptionError

COMPUTE = "compute"
IO = "io"


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
    """One daemon thread running jobs from a queue in order."""

    def __init__(self, name: str, run: Callable[[Job], None], on_exit: Callable[[], None]):
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._run = run
        self._on_exit = on_exit
        # Daemon: a download stuck on a dead connection must never keep the app from quitting.
        self.thread = threading.Thread(target=self._loop, name=f"mlx-inception-{name}",
                                       daemon=True)
        self.thread.start()

    def put(self, job: Job | None) -> None:
        self._queue.put(job)

    def _loop(self) -> None:
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    break
                self._run(job)
        finally:
            self._on_exit()
            # MLX keeps per-thread streams; freeing them here, on their own thread, lets the
            # process exit cleanly (left to interpreter shutdown it can abort).
            mx.clear_streams()


class Worker(QObject):
    """Runs jobs on the compute and io threads and reports back with signals.

    ``finished(kind, generation, result)``, ``failed(kind, generation, message)``,
    ``progress(kind, generation, fraction, text)`` (fraction < 0: unknown),
    ``busy_changed(busy, description)`` and ``done(kind, generation)`` after every job, stale
    ones included (it arrives after that job's ``finished`` or ``failed``).
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
        self._lanes = {
            COMPUTE: _Lane(COMPUTE, self._execute, on_compute_exit or (lambda: None)),
            IO: _Lane(IO, self._execute, lambda: None),
        }
        self._stopped = False

    # --- the GUI side -------------------------------------------------------------------------

    def submit(self, kind: str, function: Callable[..., Any], *args: Any, lane: str = COMPUTE,
               description: str = "", **kwargs: Any) -> int:
        """Queue ``function(*args, **kwargs)``; return its generation (newest of its kind).

        A function with a ``progress`` parameter is given a callback ``progress(fraction, text)``.
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
            kwargs["progress"] = lambda fraction, text="": self.progress.emit(
                kind, generation, float(fraction), text
            )
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

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop both threads after the job each is running; wait up to ``timeout`` seconds."""
        if self._stopped:
            return
        self._stopped = True
        with self._lock:
            for kind in list(self._latest):
                self._counter += 1
                self._latest[kind] = self._counter
        for lane in self._lanes.values():
            lane.put(None)
        for lane in self._lanes.values():
            lane.thread.join(timeout)

    # --- the worker side ----------------------------------------------------------------------

    def _execute(self, job: Job) -> None:
        try:
            if not self.is_current(job.kind, job.generation):
                return  # a newer request of this kind is queued: skip the stale one
            if job.description:
                self.busy_changed.emit(True, job.description)
            try:
                result = job.function(*job.args, **job.kwargs)
            except Exception as error:  # every failure is shown in the window, none crashes it
                if not isinstance(error, InceptionError | ValueError):
                    traceback.print_exc(file=sys.stderr)
                self.failed.emit(job.kind, job.generation, error_message(error))
            else:
                self.finished.emit(job.kind, job.generation, result)
        finally:
            with self._lock:
                self._pending -= 1
                idle = self._pending == 0
            self.done.emit(job.kind, job.generation)
            if idle:
                self.busy_changed.emit(False, "")


def _parameters(function: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return set()
