"""A Lightning logger that writes each epoch's metrics to an existing MLflow run in one batch.

Lightning's own ``MLFlowLogger`` creates and ends runs itself and writes once per ``log_metrics``
call; here the run's life is owned by :class:`~dlsuite.tracking.runs.TrackedRun` (created after
validation, ended KILLED on signals) and an epoch's train and validation metrics go in one call.

A write costs tens of milliseconds with the SQLite store (12 ms of CPU and an fsync on the 2-core
CPU), as much as a whole epoch of a small model. So finished epochs are written at most every
``min_interval_s`` seconds, in one ``log_batch`` on a writer thread while training goes on;
``flush`` (end of fit, failure, interruption) writes what is left and waits for every write.
A ``kill -9`` can therefore lose the last ``min_interval_s`` of epoch metrics, no more.

The writer is a thread of this logger, not MLflow's ``synchronous=False`` queue: that queue's thread
polls with a one-second timeout, and ending the run joins it, which added up to a second to every
run (and so to every trial of a study).
"""

from __future__ import annotations

import math
import time
from argparse import Namespace
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only


class EpochMLflowLogger(Logger):
    """Buffers metrics by epoch; finished epochs go to MLflow in batches, at most every ``min_interval_s``."""

    def __init__(self, client: Any, run_id: str, min_interval_s: float = 2.0) -> None:
        super().__init__()
        self.client = client
        self.run_id = run_id
        self.min_interval_s = min_interval_s
        self._buffer: dict[str, float] = {}
        self._epoch: int | None = None
        self._ready: list[Any] = []  # finished epochs' Metric records, not yet written
        self._writes: list[Future[None]] = []  # pending writes on the writer thread
        self._writer: ThreadPoolExecutor | None = None
        self._last_write = -math.inf  # the first finished epoch is written at once (seen early in the UI)
        self.seconds = 0.0
        """Wall time the training loop spent on MLflow writes, the final flush excepted (the
        logging overhead that runs report as ``mlflow_log_fraction``)."""

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.run_id

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Params are logged from the resolved config by the run itself."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Buffer ``metrics``; Lightning adds the ``epoch`` key, which is used as the MLflow step."""
        epoch = int(metrics.get("epoch", self._epoch if self._epoch is not None else 0))
        if self._epoch is not None and epoch != self._epoch:
            self._close_epoch()
            if time.perf_counter() - self._last_write >= self.min_interval_s:
                self._write(wait=False)
        self._epoch = epoch
        self._buffer.update({k: float(v) for k, v in metrics.items() if k != "epoch"})

    def _close_epoch(self) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        step = self._epoch or 0
        self._ready += [Metric(k, v, ts, step) for k, v in self._buffer.items()]
        self._buffer = {}

    def _write(self, wait: bool) -> None:
        start = time.perf_counter()
        # The previous write was queued at least min_interval_s ago and is normally done: waiting
        # for it costs nothing then, and holds the queue to one write when the store is slow.
        for op in self._writes:
            op.result()  # raises if a write failed
        self._writes = []
        if self._ready:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlsuite-mlflow")
            # one call: MlflowClient.log_batch splits the list into batches of at most 1000 metrics
            self._writes.append(self._writer.submit(self.client.log_batch, self.run_id, metrics=self._ready))
        self._ready = []
        if wait:
            for op in self._writes:
                op.result()
            self._writes = []
            if self._writer is not None:  # idle: its thread ends at once (made again if needed)
                self._writer.shutdown(wait=True)
                self._writer = None
        self._last_write = time.perf_counter()
        if not wait:
            self.seconds += self._last_write - start

    @rank_zero_only
    def flush(self) -> None:
        """Write every buffered epoch now and wait until MLflow has them."""
        if self._buffer:
            self._close_epoch()
        self._write(wait=True)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Flush what is left; the run itself is ended by its TrackedRun."""
        self.flush()
