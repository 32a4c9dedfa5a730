"""The MLflow child runs of a population's members, written as a sequential trial's run is written.

Each member's run holds what :func:`dlsuite.runner.run.train` records for a trial: the same tags
(``run_tags``, the study's trial tags, owner, parent), the same params (the flat config, the data and
model facts, the environment), ``config.yaml``, the dataset input, the same per-epoch metrics at the
same steps, the same summary numbers and plots, plus :data:`~dlsuite.tracking.record.POPULATION`
naming its population. Writes go through ``MlflowClient.log_batch`` on one writer thread, at most every
``min_interval_s`` seconds for the finished epochs of every member (as
:class:`~dlsuite.tracking.logger.EpochMLflowLogger` does for one run), so the training loop only
queues them: :attr:`MemberRuns.seconds` is what the loop spent on MLflow.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from dlsuite.config import RunConfig
from dlsuite.hpo.runner import RUN_ID_ATTR, TrialContext
from dlsuite.tracking import record, store
from dlsuite.tracking.runs import ERROR_TAG, OWNER_TAG, create_run, log_params, owner_id, reap_orphans


def population_id() -> str:
    """A new population's name: ``<host:pid:start>/<8 hex>`` (the owner, then a random part)."""
    return f"{owner_id()}/{uuid.uuid4().hex[:8]}"


class MemberRuns:
    """One MLflow run per member, created by :meth:`start` and ended by :meth:`finish` (or :meth:`end_all`)."""

    def __init__(self, cfgs: Sequence[RunConfig], ctxs: Sequence[TrialContext], min_interval_s: float = 2.0) -> None:
        self.cfgs = list(cfgs)
        self.ctxs = list(ctxs)
        self.client = store.client(cfgs[0].tracking.uri)
        self.min_interval_s = min_interval_s
        self.name = population_id()
        self.run_ids: list[str] = []
        self.open: set[int] = set()
        self._ready: dict[int, list[Any]] = {}
        self._writes: list[Future[None]] = []
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlsuite-population-mlflow")
        self._last = -math.inf
        self.seconds = 0.0
        """Wall time the training loop spent on per-epoch MLflow writes (queueing them, waiting for the
        previous write): what a member's ``mlflow_log_fraction`` divides by the population's epoch time."""
        self.writer_seconds = 0.0
        """Time the writer thread spent in ``log_batch`` (it shares the CPU and the GIL with training)."""
        self.end_seconds = 0.0
        """Time spent ending runs (summary numbers, plots, status), outside the epochs."""

    # -- creation -------------------------------------------------------------------------------
    def start(self, trials: Sequence[Any], dm: Any, facts: dict[str, Any]) -> None:
        """Create every member's run with its tags, params, config and dataset; link it to its trial."""
        from dlsuite.runner.run import run_tags
        from dlsuite.tracking.dataset import log_dataset
        from dlsuite.tracking.env import environment

        reap_orphans(self.client)
        exp = store.experiment_id(self.client, self.cfgs[0].tracking.experiment)
        env = environment()
        for i, (cfg, ctx, trial) in enumerate(zip(self.cfgs, self.ctxs, trials, strict=True)):
            tags = {**run_tags(cfg), **ctx.tags, OWNER_TAG: owner_id(), record.POPULATION: self.name}
            if ctx.parent_run_id:
                tags[record.PARENT] = ctx.parent_run_id
            name = cfg.tracking.run_name or cfg.name or f"{cfg.model.name}-{cfg.data.name}"
            run_id = str(create_run(self.client, exp, name, tags).info.run_id)
            self.run_ids.append(run_id)
            self.open.add(i)
            trial.set_user_attr(RUN_ID_ATTR, run_id)  # the trial links to its run as soon as it exists
            log_params(self.client, run_id, {**cfg.flat(), **facts, **env})
            self.client.log_text(run_id, cfg.to_yaml(), "config.yaml")
            log_dataset(self.client, run_id, dm, cfg)

    # -- per-epoch metrics ----------------------------------------------------------------------
    def log_epoch(self, i: int, epoch: int, metrics: dict[str, float]) -> None:
        """Queue member ``i``'s metrics of ``epoch`` (step ``epoch``, as the sequential logger steps them)."""
        from mlflow.entities import Metric

        start = time.perf_counter()
        ts = int(time.time() * 1000)
        self._ready.setdefault(i, []).extend(Metric(k, float(v), ts, epoch) for k, v in metrics.items())
        self.seconds += time.perf_counter() - start

    def epoch_done(self) -> None:
        """Hand the queued epochs to the writer thread when ``min_interval_s`` has passed since the last write."""
        start = time.perf_counter()
        if start - self._last >= self.min_interval_s:
            self._submit()
            self._last = time.perf_counter()
        self.seconds += time.perf_counter() - start

    def _submit(self) -> None:
        for op in self._writes:
            op.result()  # raises if a write failed; normally done long ago
        batches = [(self.run_ids[i], m) for i, m in self._ready.items() if m]
        self._ready = {}
        if batches:
            self._writes = [self._writer.submit(self._write, batches)]
        else:
            self._writes = []

    def _write(self, batches: list[tuple[str, list[Any]]]) -> None:
        start = time.perf_counter()
        for run_id, metrics in batches:
            self.client.log_batch(run_id, metrics=metrics)  # splits into MLflow's batches of 1000
        self.writer_seconds += time.perf_counter() - start

    def _flush(self) -> None:
        self._submit()
        for op in self._writes:
            op.result()
        self._writes = []

    # -- the end --------------------------------------------------------------------------------
    def finish(
        self,
        i: int,
        status: str,
        summary: dict[str, float] | None = None,
        history: list[dict[str, float]] | None = None,
        confusion: Any = None,
        classes: list[str] | None = None,
        error: str | None = None,
    ) -> None:
        """End member ``i``'s run: its last epochs, summary numbers and plots, then ``status``."""
        from dlsuite.tracking import plots
        from dlsuite.tracking.model import linked_metrics

        if i not in self.open:
            return
        start = time.perf_counter()
        self._flush()  # its epochs first, so the run never ends with metrics still queued
        run_id, cfg = self.run_ids[i], self.cfgs[i]
        if summary:
            self.client.log_batch(run_id, metrics=linked_metrics(summary, None))
        if cfg.tracking.plots and status == "FINISHED":
            plots.log_run_plots(self.client, run_id, history or [], confusion, classes)
        if error:
            self.client.set_tag(run_id, ERROR_TAG, error[:5000])
        self.client.set_terminated(run_id, status=status, end_time=int(time.time() * 1000))
        self.open.discard(i)
        self.end_seconds += time.perf_counter() - start

    def end_all(self, status: str, error: str) -> None:
        """End every run still open with ``status`` and ``error`` (an interruption or a crash of the population)."""
        with contextlib.suppress(Exception):
            self._flush()
        for i in sorted(self.open):
            self.client.set_tag(self.run_ids[i], ERROR_TAG, error[:5000])
            self.client.set_terminated(self.run_ids[i], status=status, end_time=int(time.time() * 1000))
        self.open.clear()

    def close(self) -> None:
        """Wait for the writer and stop it."""
        self._writer.shutdown(wait=True)
