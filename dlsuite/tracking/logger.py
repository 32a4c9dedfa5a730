"""A Lightning logger that writes each epoch's metrics to an existing MLflow run in one batch.

Lightning's own ``MLFlowLogger`` creates and ends runs itself and writes once per ``log_metrics``
call; here the run's life is owned by :class:`~dlsuite.tracking.runs.TrackedRun` (created after
validation, ended KILLED on signals) and an epoch's train and validation metrics go in one call.
"""

from __future__ import annotations

import time
from argparse import Namespace
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only


class EpochMLflowLogger(Logger):
    """Buffers metrics by epoch and flushes them with ``log_batch`` when the epoch changes."""

    def __init__(self, client: Any, run_id: str) -> None:
        super().__init__()
        self.client = client
        self.run_id = run_id
        self._buffer: dict[str, float] = {}
        self._epoch: int | None = None

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
            self.flush()
        self._epoch = epoch
        self._buffer.update({k: float(v) for k, v in metrics.items() if k != "epoch"})

    @rank_zero_only
    def flush(self) -> None:
        """Write the buffered epoch in one ``log_batch`` call."""
        if not self._buffer:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        step = self._epoch or 0
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, ts, step) for k, v in self._buffer.items()])
        self._buffer = {}

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Flush what is left; the run itself is ended by its TrackedRun."""
        self.flush()
