"""``train(cfg) -> RunResult``: one tracked training run as a plain function.

Order matters for "bad input writes nothing": the config is validated, the data loaded and the model
built before the MLflow run is created; from then on the run always ends (FINISHED, FAILED or KILLED).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint

from dlsuite.build import build_run, describe
from dlsuite.config import RunConfig
from dlsuite.errors import DlsuiteError
from dlsuite.models.cost import cost_metrics
from dlsuite.models.hooks import HasTrackingTags
from dlsuite.runner.progress import EpochProgressBar
from dlsuite.runner.summary import FINAL_KEYS
from dlsuite.tasks.classification import ClassificationTask
from dlsuite.techniques.callbacks import technique_callbacks
from dlsuite.techniques.hooks import RecordsEpochs
from dlsuite.techniques.speed import EpochTimer, resolve_precision, step_callbacks
from dlsuite.tracking import plots, record
from dlsuite.tracking.dataset import log_dataset
from dlsuite.tracking.env import environment
from dlsuite.tracking.logger import EpochMLflowLogger
from dlsuite.tracking.model import finish_model, linked_metrics, start_model
from dlsuite.tracking.runs import Killed, TrackedRun


class TrainingDiverged(DlsuiteError):
    """The training loss became NaN or infinite."""


@dataclass
class RunResult:
    """What a run produced: its MLflow id (None when untracked), end status, summary metrics,
    per-epoch history, and the trained task (best checkpoint's weights when there was validation)."""

    run_id: str | None
    status: str
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    task: Any = None


def is_rank_zero() -> bool:
    """True in the process that owns tracking (rank 0 of any launcher, or a plain process)."""
    return all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "NODE_RANK"))


class _DivergenceCheck(Callback):
    # Checked once per epoch from the already-synced epoch record, so the step pays nothing. Callbacks'
    # epoch-end hooks run before the task appends its record, so the last epoch is checked at train end.
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.on_train_epoch_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        history = pl_module.history if isinstance(pl_module, RecordsEpochs) else None
        if history and not math.isfinite(history[-1].get("train_loss", 0.0)):
            raise TrainingDiverged(
                f"training diverged: the loss became {history[-1]['train_loss']} in epoch "
                f"{int(history[-1]['epoch'])}; lower optim.lr or set optim.grad_clip"
            )


class _SignalCheck(Callback):
    """Stops training at the next batch if SIGTERM/SIGINT arrived but its exception was lost
    (:meth:`TrackedRun.raise_if_signalled`); seen on a quiet CPU: one Ctrl-C in four left the run training."""

    def __init__(self, tracked: TrackedRun) -> None:
        self.tracked = tracked

    def on_train_batch_start(self, *args: Any) -> None:
        self.tracked.raise_if_signalled()

    def on_validation_batch_start(self, *args: Any) -> None:
        self.tracked.raise_if_signalled()

    def on_test_batch_start(self, *args: Any) -> None:
        self.tracked.raise_if_signalled()


def run_tags(cfg: RunConfig) -> dict[str, str]:
    """Tags naming what the run is, for filtering in the MLflow UI."""
    return {
        record.DATASET: cfg.data.name,
        record.MODEL: cfg.model.name,
        record.TASK: cfg.task.name,
        record.CONFIG: cfg.name or "",
        **cfg.tracking.tags,
    }


def summarize_run(history: list[dict[str, float]], test: dict[str, float]) -> dict[str, float]:
    """Final numbers of a run: test metrics, best validation accuracy (its epoch) and loss, final gap."""
    out = dict(test)
    vals = [r.get("val_acc", math.nan) for r in history]
    if vals and not all(math.isnan(v) for v in vals):
        i = int(np.nanargmax(vals))
        out["best_val_acc"] = vals[i]
        out["best_epoch"] = history[i]["epoch"]
    losses = [r.get("val_loss", math.nan) for r in history]
    if losses and not all(math.isnan(v) for v in losses):
        out[record.BEST_VAL_LOSS] = float(np.nanmin(losses))
    if history:
        out.update({f"final_{k}": v for k, v in history[-1].items() if k in FINAL_KEYS})
        out["epochs_trained"] = float(len(history))
    return out


def _trainer(
    cfg: RunConfig, ckpt_dir: str, logger: Any, callbacks: list[Callback], has_val: bool
) -> tuple[L.Trainer, ModelCheckpoint]:
    t = cfg.trainer
    ckpt = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        save_top_k=1,
        save_weights_only=False,
        monitor=t.checkpoint_monitor if has_val else None,
        mode=t.checkpoint_mode,
        # Without validation no checkpoint is used (the last weights are tested and nothing is
        # logged), so do not write one every epoch: for a ResNet-18 that is 90 MB an epoch.
        every_n_epochs=1 if has_val else 0,
    )
    cbs: list[Callback] = [ckpt, _DivergenceCheck(), *technique_callbacks(cfg), *callbacks]
    es = cfg.regularization.early_stopping
    if es is not None:
        cbs.append(EarlyStopping(monitor=es.monitor, patience=es.patience, mode=es.mode, min_delta=es.min_delta))
    if t.progress_bar:
        cbs.append(EpochProgressBar(refresh_rate=10))
    trainer = L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=resolve_precision(t),  # type: ignore[arg-type]
        benchmark=t.cudnn_benchmark and not t.deterministic,
        deterministic=t.deterministic,
        logger=logger if logger is not None else False,
        callbacks=cbs,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=cfg.optim.grad_clip,
        gradient_clip_algorithm=cfg.optim.grad_clip_method,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        limit_val_batches=1.0 if has_val else 0,
        log_every_n_steps=1_000_000,
        default_root_dir=ckpt_dir,
    )
    return trainer, ckpt


def _log_start(tracked: TrackedRun, cfg: RunConfig, facts: dict[str, Any]) -> None:
    tracked.log_config(cfg, {**facts, **environment()})


def _log_end(
    tracked: TrackedRun, task: Any, dm: Any, summary: dict[str, float], best_ckpt: str, cfg: RunConfig
) -> None:
    # The logged model exists before the final numbers are written, so they are written once, linked to it.
    model_id = None
    if cfg.tracking.log_model:  # named by architecture and data, as the model list shows it
        model_id = start_model(tracked.client, tracked.run_id, run_tags(cfg), f"{cfg.model.name}-{cfg.data.name}")
    tracked.client.log_batch(tracked.run_id, metrics=linked_metrics(summary, model_id))
    if cfg.tracking.plots:
        matrix = task.test_confusion if isinstance(task, ClassificationTask) else None
        plots.log_run_plots(tracked.client, tracked.run_id, task.history, matrix, dm.classes)
    if cfg.tracking.log_checkpoint and best_ckpt and Path(best_ckpt).is_file():
        tracked.client.log_artifact(tracked.run_id, best_ckpt, "checkpoints")
    if model_id is not None:
        finish_model(tracked.client, tracked.run_id, model_id, task.model)  # the tested weights


def train(
    cfg: RunConfig,
    *,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    callbacks: list[Callback] | None = None,
    overrides: list[str] | None = None,
) -> RunResult:
    """Train, validate and test one run as ``cfg`` describes, recording it in MLflow.

    Args:
        cfg: the validated run config.
        parent_run_id: MLflow run to attach this run to as a child (studies, folds).
        tags: extra tags for the MLflow run.
        callbacks: extra Lightning callbacks (pruning, diagnostics...).
        overrides: the ``key=value`` overrides ``cfg`` was made with, shown in the run's name.
            Without ``tracking.run_name`` a run is named ``<config>-N`` (N counts the experiment's
            runs of that config), then the overrides: ``mnist1d_cnn-3 lr=0.01``.

    Raises:
        DlsuiteError: bad data or settings, before any run is created; TrainingDiverged on NaN loss.
    """
    from dlsuite.runner import protocols

    if protocols.protocol_of(cfg) is not None:  # k-fold or bagging: a parent run with one child per member
        return protocols.run_protocol(cfg, parent_run_id=parent_run_id, tags=tags, callbacks=callbacks)  # type: ignore[no-any-return]
    parts = build_run(cfg)  # validated and built before anything is written
    dm, model, task = parts.data, parts.model, parts.task
    has_val = len(dm.splits["val"][1]) > 0
    facts = describe(parts)

    # a model may name where it came from (transfer: the source run), linking the two runs
    tags = {**(model.tracking_tags if isinstance(model, HasTrackingTags) else {}), **(tags or {})}
    tracked = None
    if cfg.tracking.enabled and is_rank_zero():
        name = cfg.tracking.run_name or cfg.name or f"{cfg.model.name}-{cfg.data.name}"
        shown = {k: v for k, _, v in (o.partition("=") for o in overrides or []) if not k.startswith("tracking.")}
        if overrides:
            tags[record.OVERRIDES_TAG] = " ".join(overrides)[:5000]
        tracked = TrackedRun(
            cfg.tracking.uri,
            cfg.tracking.experiment,
            name,
            {**run_tags(cfg), **tags},
            parent_run_id,
            number=cfg.tracking.run_name is None,
            label=record.label(dict(shown)) if cfg.tracking.run_name is None else "",
        )
    ckpt_dir = tempfile.mkdtemp(prefix="dlsuite-ckpt-")
    try:
        with tracked if tracked is not None else contextlib.nullcontext():
            logger = None
            if tracked is not None:
                _log_start(tracked, cfg, facts)
                log_dataset(tracked.client, tracked.run_id, dm, cfg)
                logger = EpochMLflowLogger(tracked.client, tracked.run_id)
            timer = EpochTimer()
            extra = [timer, *step_callbacks(cfg.trainer), *(callbacks or [])]
            if tracked is not None:
                extra.append(_SignalCheck(tracked))
            trainer, ckpt = _trainer(cfg, ckpt_dir, logger, extra, has_val)
            start = time.perf_counter()
            try:
                trainer.fit(task, datamodule=dm)
                fit_s = time.perf_counter() - start
                best = ckpt.best_model_path if has_val else ""
                # SWA's averaged weights exist only at the end (checkpoints hold the raw ones): test those.
                use_best = best and cfg.trainer.test_checkpoint == "best" and cfg.regularization.swa is None
                trainer.test(task, datamodule=dm, ckpt_path=best if use_best else None, verbose=False)
            except SystemExit:
                # Lightning turns Ctrl-C / SIGTERM into a graceful shutdown and sys.exit(1).
                if tracked is not None and tracked.interrupted_by:
                    raise Killed(tracked.interrupted_by) from None
                raise
            history: list[dict[str, float]] = task.history  # type: ignore[assignment]
            summary = summarize_run(history, task.test_results)  # type: ignore[arg-type]
            summary.update({"num_params": float(facts["model.num_params"]), "fit_time_s": fit_s, **cost_metrics(facts)})
            summary.update(timer.summary(compiled=cfg.trainer.compile))
            if logger is not None:
                logger.flush()
                if timer.epoch_seconds:  # per-epoch MLflow logging as a fraction of training time
                    summary["mlflow_log_fraction"] = logger.seconds / sum(timer.epoch_seconds)
            if tracked is not None:
                _log_end(tracked, task, dm, summary, best, cfg)
        status = tracked.status if tracked is not None else "FINISHED"
        return RunResult(tracked.run_id if tracked else None, status, summary, history, task)
    finally:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
