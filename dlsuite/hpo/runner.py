"""Trial execution behind one interface: a run config in, a :class:`TrialOutcome` out.

The study layer (``dlsuite.hpo.study``) never trains anything itself; it hands each trial's config to a
:class:`TrialRunner`. :class:`TrainRunner` trains one run with :func:`dlsuite.runner.run.train`; a
batched runner (many small trials at once on one GPU) can implement the same protocol later.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import lightning as L
import optuna
from lightning.pytorch.callbacks import Callback

from dlsuite.config import RunConfig
from dlsuite.errors import DlsuiteError
from dlsuite.tracking import record
from dlsuite.tracking.runs import create_run, log_params

log = logging.getLogger(__name__)

RUN_ID_ATTR = "mlflow_run_id"
REASON_ATTR = "fail_reason"
# A trial's validation and test summary numbers, so a report can show the selected trial's test
# metrics apart from the validation metric it was selected on (without asking MLflow).
SUMMARY_ATTR = record.ATTR_SUMMARY
SUMMARY_PREFIXES = ("best_val_", "final_val_", "test_", "ensemble_val_", "ensemble_test_")


def summary_attr(metrics: dict[str, float]) -> dict[str, float]:
    """The validation and test numbers of a trial's metrics, for :data:`SUMMARY_ATTR`."""
    return {k: float(v) for k, v in sorted(metrics.items()) if k.startswith(SUMMARY_PREFIXES) and v == v}


@dataclass
class TrialContext:
    """What a runner needs besides the config: where to record and how to prune."""

    parent_run_id: str | None
    tags: dict[str, str]
    prune: bool
    monitor: str


@dataclass
class TrialOutcome:
    """How a trial ended: ``COMPLETE``, ``PRUNED`` or ``FAIL`` (with its reason) and its metrics."""

    state: str
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    reason: str | None = None
    seconds: float = 0.0


class TrialRunner(Protocol):
    """Runs one trial. Must return FAIL outcomes for the trial's own errors and let
    ``KeyboardInterrupt`` (Ctrl-C, SIGTERM) propagate so the worker can stop."""

    def run(self, cfg: RunConfig, trial: optuna.Trial, ctx: TrialContext) -> TrialOutcome:
        """Train ``cfg`` as trial ``trial``."""
        ...


class TrialCallback(Callback):
    """Links the Optuna trial to its MLflow run as soon as training starts, and prunes.

    Unlike ``optuna_integration.PyTorchLightningPruningCallback`` it does not raise inside ``fit``: it
    asks the trainer to stop (broadcast to every rank, so it also holds under DDP), the run then ends
    normally (tested, logged, FINISHED) and the runner reports the trial PRUNED.
    """

    def __init__(self, trial: optuna.Trial | None, monitor: str, prune: bool) -> None:
        """``trial`` is None on the other ranks of a DDP trial: they only obey rank 0's decision."""
        super().__init__()
        self.trial = trial
        self.monitor = monitor
        self.prune = prune
        self.run_id: str | None = None
        self.pruned_at: int | None = None
        self.epochs = 0
        self._warned = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.logger is not None and trainer.is_global_zero and self.trial is not None:
            self.run_id = str(trainer.logger.version)
            self.trial.set_user_attr(RUN_ID_ATTR, self.run_id)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.prune or trainer.sanity_checking:
            return
        should_stop = False
        if trainer.is_global_zero and self.trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                if not self._warned:
                    log.warning(
                        "pruning: metric %r is not logged; known: %s", self.monitor, list(trainer.callback_metrics)
                    )
                    self._warned = True
            elif math.isfinite(float(value)):
                self.trial.report(float(value), step=pl_module.current_epoch)
                should_stop = self.trial.should_prune()
        should_stop = bool(trainer.strategy.broadcast(should_stop))
        if should_stop:
            self.pruned_at = pl_module.current_epoch
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs = trainer.current_epoch  # epochs run, the same on every rank


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


class TrainRunner:
    """One trial = one :func:`~dlsuite.runner.run.train` call, with a :class:`TrialCallback`."""

    def run(self, cfg: RunConfig, trial: optuna.Trial, ctx: TrialContext) -> TrialOutcome:
        """Train ``cfg``; divergence, out-of-memory and any other exception become FAIL outcomes.

        A trial on several processes (DDP) is trained in a process group of its own
        (:mod:`dlsuite.hpo.ddp`); the others here.
        """
        from dlsuite.hpo.ddp import is_multi_process, run_ddp_trial

        if is_multi_process(cfg):
            return run_ddp_trial(cfg, trial, ctx)
        return self.run_here(cfg, trial, ctx)[0]

    def run_here(
        self, cfg: RunConfig, trial: optuna.Trial | None, ctx: TrialContext
    ) -> tuple[TrialOutcome, TrialCallback]:
        """Train ``cfg`` in this process (``trial`` None: a DDP trial's rank other than 0); the outcome and
        the trial's callback (epochs run, where it was pruned)."""
        import torch

        from dlsuite.runner.run import TrainingDiverged, train

        cb = TrialCallback(trial, ctx.monitor, ctx.prune)
        start = time.perf_counter()
        try:
            result = train(cfg, parent_run_id=ctx.parent_run_id, tags=ctx.tags, callbacks=[cb])
        except TrainingDiverged as exc:
            return TrialOutcome(
                "FAIL", run_id=cb.run_id, reason=f"diverged: {exc}", seconds=time.perf_counter() - start
            ), cb
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()  # the next trial in this worker must not inherit the fragments
            return TrialOutcome(
                "FAIL",
                run_id=cb.run_id,
                reason=f"CUDA out of memory: {str(exc)[:300]}",
                seconds=time.perf_counter() - start,
            ), cb
        except (DlsuiteError, Exception) as exc:
            log.debug("trial %s raised", trial.number if trial else "(DDP rank)", exc_info=True)
            return TrialOutcome("FAIL", run_id=cb.run_id, reason=_reason(exc), seconds=time.perf_counter() - start), cb
        state = "PRUNED" if cb.pruned_at is not None else "COMPLETE"
        reason = f"pruned at epoch {cb.pruned_at}" if cb.pruned_at is not None else None
        outcome = TrialOutcome(
            state, dict(result.metrics), result.run_id or cb.run_id, reason, time.perf_counter() - start
        )
        return outcome, cb


def record_failed_run(
    client: Any, experiment_id: str, run_name: str, tags: dict[str, str], params: dict[str, Any], reason: str
) -> str:
    """An MLflow child run for a trial that failed before its run existed (so every trial is in MLflow)."""
    run = create_run(client, experiment_id, run_name, {**tags, record.ERROR: reason[:5000]})
    log_params(client, run.info.run_id, params)
    client.set_terminated(run.info.run_id, status="FAILED")
    return str(run.info.run_id)


__all__ = ["RUN_ID_ATTR", "TrainRunner", "TrialCallback", "TrialContext", "TrialOutcome", "TrialRunner"]
