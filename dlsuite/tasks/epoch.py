"""What the sequence-to-sequence and reconstruction tasks share with classification's contract.

``train/run.py`` reads ``task.history`` (one dict per epoch: ``epoch``, ``train_loss``, ``val_loss``,
``lr``, ...) and ``task.test_results``; :class:`EpochTask` keeps both, accumulating named sums on the
device during the epoch and reading them once at its end, as ``ClassificationTask`` does.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from dlsuite.config import RunConfig
from dlsuite.train.optim import create_optimizer, create_scheduler


class EpochTask(L.LightningModule):
    """Base for tasks that report per-epoch means of named statistics.

    Subclasses call :meth:`add` with sums (``{"loss": loss * n, "n": n, ...}``) in every step and
    name, in ``MEANS``, which sums become means (divided by which count) in the epoch's record.
    """

    MEANS: dict[str, str] = {}  # statistic -> the count it is divided by

    def __init__(self, model: nn.Module, cfg: RunConfig, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        # Plain data only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {"config": cfg.to_dict(), "num_classes": num_classes, "input_shape": list(input_shape)}
        )
        self.model = model
        self.cfg = cfg
        self.num_classes = num_classes
        self.history: list[dict[str, float]] = []
        self.test_results: dict[str, float] = {}
        self._sums: dict[str, dict[str, torch.Tensor]] = {}
        self._val: dict[str, float] = {}
        self._epoch_lr = float("nan")

    def add(self, stage: str, stats: dict[str, torch.Tensor]) -> None:
        """Add this step's sums to the stage's running totals (no host sync)."""
        totals = self._sums.setdefault(stage, {})
        for k, v in stats.items():
            v = v.detach().float()
            totals[k] = totals[k] + v if k in totals else v

    def take(self, stage: str) -> dict[str, float]:
        """``{stage}_{stat}`` means over the epoch and all ranks; resets the stage."""
        totals = self._sums.pop(stage, None)
        if not totals:
            return {}
        keys = sorted(totals)
        reduced = self.trainer.strategy.reduce(torch.stack([totals[k] for k in keys]), reduce_op="sum")
        values = dict(zip(keys, reduced.tolist()))  # the one host sync of the epoch
        return {f"{stage}_{k}": values[k] / max(values[n], 1.0) for k, n in self.MEANS.items() if k in values}

    def on_validation_epoch_end(self) -> None:
        """Keep the validation means for the training epoch's record (validation runs first)."""
        val = self.take("val")
        if self.trainer.sanity_checking:
            return
        self._val = val
        self.log_dict(val, sync_dist=False)

    def on_train_epoch_start(self) -> None:
        """Remember the learning rate this epoch trains with (the scheduler steps before the epoch end hook)."""
        self._epoch_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_epoch_end(self) -> None:
        """The epoch's record: train and validation means, their gaps, the learning rate."""
        row: dict[str, float] = {"epoch": float(self.current_epoch), **self.take("train"), **self._val}
        for k in ("acc", "loss"):
            if f"train_{k}" in row and f"val_{k}" in row:
                gap = row[f"train_{k}"] - row[f"val_{k}"]
                row[f"gap_{k}"] = gap if k == "acc" else -gap  # both positive when overfitting
        row["lr"] = self._epoch_lr
        self._val = {}
        self.history.append(row)
        self.log_dict({k: v for k, v in row.items() if k != "epoch"}, sync_dist=False)

    def on_test_epoch_end(self) -> None:
        """Final test means."""
        self.test_results = self.take("test")
        self.log_dict(self.test_results, sync_dist=False)

    def configure_optimizers(self) -> Any:
        """Optimiser and schedule from the config's registries."""
        opt = create_optimizer(self.model, self.cfg.optim)
        epochs = self.cfg.trainer.max_epochs
        steps = max(1, int(self.trainer.estimated_stepping_batches) // epochs)
        return {"optimizer": opt, "lr_scheduler": create_scheduler(opt, self.cfg.optim.schedule, epochs, steps)}
