"""Learning-rate and batch-size finders: Lightning's ``Tuner`` on a run config, recorded in MLflow.

``tune_lr`` runs the learning-rate range test (Smith 2017): a short training whose learning rate grows
exponentially while the loss is recorded; the suggestion is the steepest descent of the smoothed loss.
``tune_batch_size`` doubles the batch size until memory runs out (or ``max_trials`` / the dataset's size) and
also times each size, so the throughput curve shows where larger batches stop paying.
Each logs the curve as ``plots/*.png`` and the suggestion as a param (``tune.lr_suggestion`` /
``tune.batch_size_suggestion``) of an MLflow run tagged ``dlsuite.tune``.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.tuner import Tuner

from dlsuite.build import build_run
from dlsuite.config import RunConfig
from dlsuite.errors import DlsuiteError
from dlsuite.techniques.speed import resolve_precision
from dlsuite.tracking import record
from dlsuite.tracking.runs import TrackedRun


@dataclass
class TuneResult:
    """What a finder suggests, the curve behind it, and the MLflow run that records it."""

    suggestion: float | int | None
    curve: dict[str, list[float]] = field(default_factory=dict)
    run_id: str | None = None


def _setup(cfg: RunConfig) -> tuple[Any, L.LightningModule]:
    # A copy: the batch-size finder writes its trials into the data config.
    parts = build_run(cfg.model_copy(deep=True))
    return parts.data, parts.task


def _trainer(cfg: RunConfig, root: str) -> L.Trainer:
    t = cfg.trainer
    return L.Trainer(
        max_epochs=t.max_epochs,
        accelerator=t.accelerator,
        devices=1,  # finders run in one process
        precision=resolve_precision(t),  # type: ignore[arg-type]
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=cfg.optim.grad_clip,
        gradient_clip_algorithm=cfg.optim.grad_clip_method,
        default_root_dir=root,
    )


def _record(cfg: RunConfig, kind: str, params: dict[str, Any], fig: Any, folder: str) -> str | None:
    """Log a finder's run (``params``, ``fig`` as ``plots/<kind>_finder.png``) when tracking; close ``fig``."""
    import matplotlib.pyplot as plt

    from dlsuite.runner.run import is_rank_zero, run_tags

    try:
        if not (cfg.tracking.enabled and is_rank_zero()):
            return None
        plot = Path(folder) / f"{kind}_finder.png"
        fig.savefig(plot, dpi=100)
        name = f"tune-{kind}-{cfg.model.name}-{cfg.data.name}"
        tags = {**run_tags(cfg), record.FINDER: kind}
        tracked = TrackedRun(cfg.tracking.uri, cfg.tracking.experiment, name, tags, None, number=True)
        with tracked:
            tracked.log_config(cfg, params)
            tracked.client.log_artifact(tracked.run_id, str(plot), "plots")
        return tracked.run_id
    finally:
        plt.close(fig)


LR_FINDER_BETA = 0.98
"""The smoothing factor of Lightning's learning-rate finder (``_LRCallback(beta=0.98)``)."""


def raw_losses(smoothed: list[float], beta: float = LR_FINDER_BETA) -> list[float]:
    """The per-step training losses behind Lightning's smoothed finder curve (it keeps only the smoothed one).

    Lightning records ``avg_i / (1 - beta ** (step_i + 1))`` with ``avg_i = beta * avg_{i-1} + (1 - beta) * loss_i``
    and ``step_i = i + 1`` (the step count after the optimiser step): its first point is about half the
    first loss, which is why the smoothed curve seems to rise at the start. Inverting it gives the losses.
    """
    out: list[float] = []
    prev = 0.0
    for i, value in enumerate(smoothed):
        avg = value * (1 - beta ** (i + 2))
        out.append((avg - beta * prev) / (1 - beta))
        prev = avg
    return out


def _lr_plot(lrs: list[float], raw: list[float], smoothed: list[float], suggestion: float | None) -> Any:
    """Loss against learning rate: every step's loss, Lightning's smoothed curve, the suggestion marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lrs, raw, color="0.6", lw=0.8, marker=".", ms=3, label="training loss at each step")
    ax.plot(lrs, smoothed, color="C0", lw=2, label="smoothed (the finder's curve; its start is biased low)")
    if suggestion:
        y = float(np.interp(math.log(suggestion), np.log(lrs), smoothed))
        ax.axvline(suggestion, color="C3", ls="--", lw=1)
        ax.plot([suggestion], [y], "o", color="C3", ms=8, label=f"suggestion {suggestion:.3g} (steepest descent)")
    finite = [v for v in raw if math.isfinite(v)]
    if finite:  # a diverging tail would squash the useful part of the plot
        low, high = min(finite), float(np.percentile(finite, 95))
        ax.set_ylim(low - 0.05 * (high - low), high + 0.15 * (high - low))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate range test")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def tune_lr(cfg: RunConfig, *, min_lr: float = 1e-6, max_lr: float = 1.0, num_training: int = 100) -> TuneResult:
    """Run Lightning's learning-rate finder on ``cfg``; log the loss-vs-lr curve and the suggestion."""
    import matplotlib

    matplotlib.use("Agg")

    if not 0 < min_lr < max_lr:
        raise DlsuiteError(f"need 0 < min_lr < max_lr, got {min_lr} and {max_lr}")
    dm, task = _setup(cfg)
    with tempfile.TemporaryDirectory(prefix="dlsuite-tune-") as tmp:
        trainer = _trainer(cfg, tmp)
        finder = Tuner(trainer).lr_find(
            task, datamodule=dm, min_lr=min_lr, max_lr=max_lr, num_training=num_training, update_attr=False
        )
        if finder is None:
            raise DlsuiteError("the learning-rate finder produced no result")
        suggestion = finder.suggestion()
        lrs = [float(v) for v in finder.results["lr"]]
        smoothed = [float(v) for v in finder.results["loss"]]
        raw = raw_losses(smoothed)
        curve = {"lr": lrs, "loss": smoothed, "raw_loss": raw}
        fig = _lr_plot(lrs, raw, smoothed, suggestion)
        params = {
            "tune.lr_suggestion": suggestion,
            "tune.min_lr": min_lr,
            "tune.max_lr": max_lr,
            "tune.num_training": num_training,
        }
        run_id = _record(cfg, "lr", params, fig, tmp)
    return TuneResult(suggestion, curve, run_id)


class _Timed:
    """Wraps training batches and records the time between consecutive batch requests per batch size, which
    in steady state is one training step (the batch-size finder removes callbacks, so timing lives here).
    The device is synchronised at each request: this is a measurement, not a training run."""

    def __init__(self, batches: Any, times: dict[int, list[float]]) -> None:
        self.batches = batches
        self.times = times

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Any:
        last: tuple[int, float] | None = None
        for batch in self.batches:
            x = batch[0]
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            now = time.perf_counter()
            if last is not None:
                self.times.setdefault(last[0], []).append(now - last[1])
            last = (len(x), now)
            yield batch


def _tunable(dm: Any, times: dict[int, list[float]]) -> Any:
    """Give the data module the ``batch_size`` attribute the finder reads and writes (it lives in the config),
    and time its training batches."""

    def get(self: Any) -> int:
        return int(self.cfg.batch_size)

    def set_(self: Any, value: int) -> None:
        self.cfg.batch_size = int(value)

    base = type(dm)

    def train_dataloader(self: Any) -> Any:
        return _Timed(base.train_dataloader(self), times)

    attrs = {"batch_size": property(get, set_), "train_dataloader": train_dataloader}
    dm.__class__ = type(f"Tunable{base.__name__}", (base,), attrs)
    return dm


def tune_batch_size(
    cfg: RunConfig, *, init_val: int = 16, max_trials: int = 8, steps_per_trial: int = 5, mode: str = "power"
) -> TuneResult:
    """Run Lightning's batch-size finder on ``cfg``; log the throughput-vs-batch-size curve and the suggestion.

    The batch size is capped at the training split's size (a bigger batch cannot be drawn).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if mode not in ("power", "binsearch"):
        raise DlsuiteError(f"mode must be 'power' or 'binsearch', got {mode!r}")
    dm, task = _setup(cfg)
    times: dict[int, list[float]] = {}
    dm = _tunable(dm, times)
    n_train = len(dm.splits["train"][1])
    with tempfile.TemporaryDirectory(prefix="dlsuite-tune-") as tmp:
        trainer = _trainer(cfg, tmp)
        found = Tuner(trainer).scale_batch_size(
            task,
            datamodule=dm,
            mode=mode,
            init_val=min(init_val, n_train),
            max_trials=max_trials,
            steps_per_trial=steps_per_trial,
            max_val=n_train,
        )
        suggestion = min(int(found), n_train) if found else None
        sizes = sorted(times)
        # The first step of a size pays for warm-up (allocation, kernel choice): take the best of the rest.
        rate = [b / min(times[b][1:] or times[b]) for b in sizes]
        curve = {"batch_size": [float(b) for b in sizes], "samples_per_s": rate}
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(sizes, rate, "o-")
        if suggestion:
            ax.axvline(suggestion, color="grey", ls=":", label=f"suggestion {suggestion}")
            ax.legend()
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("training samples / s")
        ax.set_title(f"batch-size finder ({mode}) on {trainer.strategy.root_device}")
        fig.tight_layout()
        params = {
            "tune.batch_size_suggestion": suggestion,
            "tune.mode": mode,
            "tune.max_trials": max_trials,
            "tune.steps_per_trial": steps_per_trial,
            "tune.tried": [int(b) for b in sizes],
            "tune.samples_per_s": [round(r, 1) for r in rate if math.isfinite(r)],
        }
        run_id = _record(cfg, "batch_size", params, fig, tmp)
    return TuneResult(suggestion, curve, run_id)
