"""A study's run figures drawn in a helper process while the next trial trains.

Each run's two PNGs cost about 0.12 s of matplotlib on a 2-core CPU, paid per trial by the sequential
runner and per member by a population. Inside :func:`in_background` (a study worker's loop),
:func:`dlsuite.tracking.plots.log_run_plots` hands the drawing to one helper process (started with the
block; its core is left to it, :func:`dlsuite.techniques.speed.cores_reserved`) and returns; the PNGs
are logged to their run from this process once drawn: when the next figures are handed over, and all
of them when the block ends, so a study returns with every figure logged. The helper takes one job at
a time; when the block ends this process, idle otherwise, draws some of those still waiting. A run may
end FINISHED a moment before its figures arrive; a study killed with ``kill -9`` can leave the runs of
its last trials without figures (the store stays consistent: their status and metrics are written
before). Outside the block figures are drawn inline.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import shutil
import signal
import sys
import tempfile
import threading
import types
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_ACTIVE: list[PlotQueue] = []


def _start_helper() -> None:
    """The helper's set-up: it dies with its parent, leaves Ctrl-C to it, and loads matplotlib now."""
    from dlsuite.tracking.runs import die_with_parent

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent drains or ends it
    import dlsuite.tracking.plots  # noqa: F401


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Start the helper without the caller's ``__main__``: spawn imports it again in the child, and a
    script that runs a study at its top level, unguarded by ``if __name__ == "__main__"``, would run its
    whole study again in the helper (seen: a benchmark script that ran itself recursively). The helper
    needs dlsuite only. The helper is started inside ``submit`` (``ProcessPoolExecutor`` spawns there)."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


@dataclass
class _Job:
    """One run's figures to draw: where, from what, and the future its logging waits on."""

    client: Any
    run_id: str
    out: Path
    args: tuple[Any, ...]  # history, matrix, classes
    done: Future[None] = field(default_factory=Future)


class PlotQueue:
    """One helper process drawing run figures; the drawn ones are logged from the calling process.

    The helper is handed one job at a time (the next when it finishes one), so that the jobs not yet
    handed over stay here: at the end this process draws some of them itself (:meth:`close`).
    """

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._jobs: list[_Job] = []  # every job not yet logged, in order
        self._waiting: deque[_Job] = deque()  # not yet handed to the helper
        self._busy = False  # the helper holds a job
        self._lock = threading.Lock()
        self.drawn_here = 0
        """Figures this process drew itself at the end (:meth:`close`)."""

    def start(self) -> None:
        """Start the helper now (it takes about a second to import matplotlib), so that it is ready when
        the first run ends: the first trials' figures otherwise wait for it while the next ones train."""
        if self._pool is None:
            context = multiprocessing.get_context("spawn")  # no fork of a process holding torch's threads
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_start_helper)
            with _main_not_reimported():  # ProcessPoolExecutor spawns its process on the first submit
                self._pool.submit(int)

    def submit(self, client: Any, run_id: str, history: list[dict[str, float]], matrix: Any, classes: Any) -> None:
        """Have run ``run_id``'s figures drawn; log those already drawn."""
        self._log_done(wait=False)
        self.start()
        job = _Job(client, run_id, Path(tempfile.mkdtemp(prefix="dlsuite-art-")), (history, matrix, classes))
        self._jobs.append(job)
        with self._lock:
            self._waiting.append(job)
        self._feed()

    def _feed(self) -> None:
        """Hand the helper the oldest waiting job if it holds none (also called as it finishes one)."""
        from dlsuite.tracking.plots import draw_run_plots

        with self._lock:
            if self._busy or not self._waiting or self._pool is None:
                return
            job, self._busy = self._waiting.popleft(), True
        try:
            future = self._pool.submit(draw_run_plots, job.out, *job.args)  # its process exists: start()
        except Exception as exc:  # noqa: BLE001  the pool is broken or shut: the job fails, logged later
            self._landed(job, None, exc)
            return
        future.add_done_callback(lambda f: self._landed(job, f, None))

    def _landed(self, job: _Job, future: Future[None] | None, error: BaseException | None) -> None:
        if error is None and future is not None:
            error = future.exception()
        if error is None:
            job.done.set_result(None)
        else:
            job.done.set_exception(error)
        with self._lock:
            self._busy = False
        self._feed()

    def _log_done(self, wait: bool) -> None:
        from dlsuite.tracking.plots import log_drawn

        left = []
        for job in self._jobs:
            if not wait and not job.done.done():
                left.append(job)
                continue
            try:
                job.done.result()
                log_drawn(job.client, job.run_id, job.out)
            except Exception as exc:  # noqa: BLE001  a figure must not fail the study whose numbers are in
                log.warning("run %s: its figures could not be drawn or logged: %s", job.run_id, exc)
            finally:
                shutil.rmtree(job.out, ignore_errors=True)
        self._jobs = left

    def _share_the_rest(self) -> None:
        """Draw here some of the jobs the helper has not started, the newest first: at the end this
        process only waits, and a population's last members hand over their figures all at once (5
        members: 0.6 s of drawing for the helper alone). This process takes fewer than half, as its
        first drawing also builds its figures (about one more drawing's time)."""
        from dlsuite.tracking.plots import draw_run_plots

        with self._lock:
            take = min(len(self._waiting), (len(self._waiting) + self._busy - 1) // 2)
            mine = [self._waiting.pop() for _ in range(take)]
        for job in mine:
            try:
                draw_run_plots(job.out, *job.args)
                job.done.set_result(None)
                self.drawn_here += 1
            except Exception as exc:  # noqa: BLE001  logged as the helper's failures are, in _log_done
                job.done.set_exception(exc)

    def close(self) -> None:
        """Log every figure still being drawn (drawing some here meanwhile), then stop the helper."""
        try:
            self._share_the_rest()
            self._log_done(wait=True)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None


def active() -> PlotQueue | None:
    """The queue of the enclosing :func:`in_background` block, if any."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def in_background(start: bool = False) -> Iterator[PlotQueue]:
    """Draw run figures in a helper process within the block; every one is logged when it ends.

    ``start``: start the helper at once (the block's runs draw figures) rather than at the first figure."""
    queue = PlotQueue()
    _ACTIVE.append(queue)
    try:
        if start:
            queue.start()
        yield queue
    finally:
        _ACTIVE.remove(queue)
        queue.close()
