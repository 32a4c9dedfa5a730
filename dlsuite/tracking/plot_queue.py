"""A study's run figures drawn in a helper process while the next trial trains.

Each run's two PNGs cost about 0.2 s of matplotlib on a 2-core CPU, paid per trial by the sequential
runner and per member by a population: half of a population's time on the quick study. Inside
:func:`in_background` (a study worker's loop), :func:`dlsuite.tracking.plots.log_run_plots` hands the
drawing to one helper process (its own core) and returns; the PNGs are logged to their run from this
process once drawn: when the next figures are handed over, and all of them when the block ends, so a
study returns with every figure logged. A run may end FINISHED a moment before its figures arrive;
a study killed with ``kill -9`` can leave the runs of its last trials without figures (the store stays
consistent: their status and metrics are written before). Outside the block figures are drawn inline.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import shutil
import signal
import sys
import tempfile
import types
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
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


class PlotQueue:
    """One helper process drawing run figures; the drawn ones are logged from the calling process."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[tuple[Future[None], Any, str, Path]] = []

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
        from dlsuite.tracking.plots import draw_run_plots

        self._log_done(wait=False)
        self.start()
        assert self._pool is not None
        out = Path(tempfile.mkdtemp(prefix="dlsuite-art-"))
        with _main_not_reimported():
            future = self._pool.submit(draw_run_plots, out, history, matrix, classes)
        self._pending.append((future, client, run_id, out))

    def _log_done(self, wait: bool) -> None:
        from dlsuite.tracking.plots import log_drawn

        left = []
        for future, client, run_id, out in self._pending:
            if not wait and not future.done():
                left.append((future, client, run_id, out))
                continue
            try:
                future.result()
                log_drawn(client, run_id, out)
            except Exception as exc:  # noqa: BLE001  a figure must not fail the study whose numbers are in
                log.warning("run %s: its figures could not be drawn or logged: %s", run_id, exc)
            finally:
                shutil.rmtree(out, ignore_errors=True)
        self._pending = left

    def close(self) -> None:
        """Log every figure still being drawn, then stop the helper."""
        try:
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
