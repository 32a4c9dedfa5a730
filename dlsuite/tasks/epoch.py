"""The per-epoch bookkeeping every task shares: device-side sums, one host sync an epoch, the record.

``runner/run.py`` reads ``task.history`` (one dict per epoch: ``epoch``, ``train_loss``, ``val_loss``,
``gap_loss``, ``lr``, ...) and ``task.test_results``. Statistics are summed on the device during the
epoch (in place, no allocation after the first step, counts as host integers) and read once at its
end, so the training step never waits for the host.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from dlsuite.models.hooks import HasCallbacks
from dlsuite.tasks.components import Components
from dlsuite.tasks.lean import LeanHooks

Stat = torch.Tensor | int | float


class EpochTask(LeanHooks, L.LightningModule):
    """Base for tasks that report per-epoch means of named statistics.

    Subclasses call :meth:`add` in every step with sums (``{"loss": loss * n, "n": n, ...}``; counts
    may be Python numbers, such as a batch's length) and name, in ``MEANS``, which sums become means
    (divided by which count) in the epoch's record. :meth:`stage_metrics` may add more per stage.
    """

    MEANS: dict[str, str] = {}  # statistic -> the count it is divided by
    EXTRA_METRICS: tuple[str, ...] = ()  # further per-stage numbers a subclass's stage_metrics adds

    @classmethod
    def stage_metric_names(cls) -> tuple[str, ...]:
        """The numbers each stage reports (``acc``, ``loss``, ...; logged as ``val_acc``, ``test_acc``...)."""
        return (*cls.MEANS, *cls.EXTRA_METRICS)

    def __init__(self, model: nn.Module, parts: Components, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        # Plain data only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {"config": parts.hparams, "num_classes": num_classes, "input_shape": list(input_shape)}
        )
        self.model = model
        self.parts = parts
        self.num_classes = num_classes
        self.history: list[dict[str, float]] = []
        self.test_results: dict[str, float] = {}
        self._sums: dict[str, dict[str, Stat]] = {}
        self._val: dict[str, float] = {}
        self._epoch_lr = float("nan")

    # -- accumulation on the device ------------------------------------------------------------
    def add(self, stage: str, stats: dict[str, Stat]) -> None:
        """Add this step's sums to the stage's running totals (no host sync)."""
        totals = self._sums.get(stage)
        if totals is None:
            self._sums[stage] = {
                k: v.detach().float().clone() if isinstance(v, torch.Tensor) else v for k, v in stats.items()
            }
            return
        for k, v in stats.items():
            if isinstance(v, torch.Tensor):
                totals[k].add_(v.detach())  # type: ignore[union-attr]
            else:
                totals[k] += v  # type: ignore[operator]

    def take(self, stage: str) -> dict[str, float]:
        """``{stage}_{stat}`` means over the epoch and all ranks; resets the stage."""
        totals = self._sums.pop(stage, None)
        if not totals:
            return {}
        keys = sorted(totals)
        device = next((v.device for v in totals.values() if isinstance(v, torch.Tensor)), self.device)
        local = torch.stack([torch.as_tensor(totals[k], dtype=torch.float32, device=device) for k in keys])
        reduced = self.trainer.strategy.reduce(local, reduce_op="sum")
        values = dict(zip(keys, reduced.tolist()))  # the one host sync of the epoch
        return {f"{stage}_{k}": values[k] / max(values[n], 1.0) for k, n in self.MEANS.items() if k in values}

    def stage_metrics(self, stage: str) -> dict[str, float]:
        """The stage's epoch numbers: :meth:`take`'s means (subclasses add their own)."""
        return self.take(stage)

    # -- epoch ends --------------------------------------------------------------------------
    def on_validation_epoch_end(self) -> None:
        """Keep the validation numbers for the training epoch's record (validation runs first)."""
        val = self.stage_metrics("val")
        if self.trainer.sanity_checking:
            return
        self._val = val
        self.log_dict(val, sync_dist=False)

    def on_train_epoch_start(self) -> None:
        """Remember the learning rate this epoch trains with (the scheduler steps before the epoch end hook)."""
        self._epoch_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_end(self) -> None:
        """The epoch's record: train and validation numbers, their gaps, the learning rate."""
        row: dict[str, float] = {"epoch": float(self.current_epoch), **self.stage_metrics("train"), **self._val}
        for k in ("acc", "loss"):
            if f"train_{k}" in row and f"val_{k}" in row:
                gap = row[f"train_{k}"] - row[f"val_{k}"]
                row[f"gap_{k}"] = gap if k == "acc" else -gap  # both positive when overfitting
        row["lr"] = self._epoch_lr
        # the validation numbers were logged when validation ended; each key logged costs ~1 ms
        self.log_dict({k: v for k, v in row.items() if k != "epoch" and k not in self._val}, sync_dist=False)
        self._val = {}
        self.history.append(row)

    def on_test_epoch_end(self) -> None:
        """Final test numbers, kept for the run's summary. Not passed to the logger: the run logs them
        once with its other final numbers (logged here too they appeared twice, at the last epoch and at 0)."""
        self.test_results = self.stage_metrics("test")

    # -- configuration -----------------------------------------------------------------------
    def configure_callbacks(self) -> list[Any]:
        """Callbacks the model asks for (a transfer model's gradual unfreezing), merged into the Trainer's."""
        return list(self.model.callbacks()) if isinstance(self.model, HasCallbacks) else []

    def configure_optimizers(self) -> Any:
        """The optimiser and schedule the task was given, over the model's parameters."""
        opt = self.parts.optimizer(self.model)
        epochs = int(self.trainer.max_epochs or 1)
        steps = max(1, int(self.trainer.estimated_stepping_batches) // epochs)
        return {"optimizer": opt, "lr_scheduler": self.parts.scheduler(opt, epochs, steps)}
