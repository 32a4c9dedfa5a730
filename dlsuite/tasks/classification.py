"""The classification task: any registered backbone, a loss, torchmetrics, optimiser and schedule.

Metrics are accumulated on the device during the epoch and read once at its end, so the training
step never waits for the host (no ``.item()`` per step). Each epoch's numbers are kept in
``history`` (the source of the learning-curve plot) and logged once per epoch.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from dlsuite.config import RunConfig
from dlsuite.tasks.lean import LeanHooks
from dlsuite.train.losses import create_loss
from dlsuite.train.optim import create_optimizer, create_scheduler
from dlsuite.train.regularizers import TrainObjective


class ClassificationTask(LeanHooks, L.LightningModule):
    """Wraps a plain ``nn.Module`` that maps inputs to class logits.

    Args:
        model: the backbone, ``(B, *input_shape) -> (B, num_classes)``.
        cfg: the run config (loss, optimiser, schedule, regularisation).
        num_classes: number of classes.
        input_shape: shape of one example, kept in the checkpoint so the model can be rebuilt.
    """

    def __init__(self, model: nn.Module, cfg: RunConfig, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        # Plain data only, so checkpoints load with torch.load(weights_only=True).
        self.save_hyperparameters(
            {"config": cfg.to_dict(), "num_classes": num_classes, "input_shape": list(input_shape)}
        )
        self.model = model
        self.cfg = cfg
        self.num_classes = num_classes
        self.loss_fn = create_loss(cfg)
        self.objective = TrainObjective(cfg, input_shape)  # augmentation, mixup / cutmix, L1 / L2 penalties
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        self.val_metrics = metrics.clone(prefix="val_")
        self.test_metrics = metrics.clone(prefix="test_")
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.history: list[dict[str, float]] = []
        self.test_results: dict[str, float] = {}
        self.test_confusion: Any = None
        self._sums: dict[str, list[Any]] = {}
        self._val: dict[str, float] = {}
        self._epoch_lr = float("nan")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)``."""
        return self.model(x)

    # -- accumulation on the device ------------------------------------------------------------
    def _add(self, stage: str, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        # In-place sums on the device and the count as a Python int (a shape, known on the host):
        # five small kernels a step, no host-to-device copy, no allocation after the first step.
        n = len(y)
        correct = (logits.argmax(-1) == y).sum()
        sums = self._sums.get(stage)
        if sums is None:
            self._sums[stage] = [loss.detach().float() * n, correct, n]
        else:
            sums[0].add_(loss.detach(), alpha=n)
            sums[1].add_(correct)
            sums[2] += n

    def _take(self, stage: str) -> tuple[float, float]:
        """(mean loss, accuracy) of the stage over all ranks; resets the sums."""
        acc = self._sums.pop(stage, None)
        if acc is None:
            return float("nan"), float("nan")
        local = torch.stack([acc[0], acc[1].float(), torch.tensor(float(acc[2]), device=acc[0].device)])
        sums = self.trainer.strategy.reduce(local, reduce_op="sum")
        loss_sum, correct, n = sums.tolist()  # the one host sync of the epoch
        return loss_sum / max(n, 1.0), correct / max(n, 1.0)

    # -- steps -------------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Forward, loss averaged over the minibatch (plus penalties), device-side statistics."""
        x, y = batch
        logits, loss, total = self.objective(self, self.loss_fn, x, y)
        self._add("train", loss, logits, y)
        return total

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Loss and metrics on the validation split."""
        x, y = batch
        logits = self(x)
        self._add("val", self.loss_fn(logits, y), logits, y)
        self.val_metrics.update(logits, y)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Loss, metrics and confusion matrix on the test split."""
        x, y = batch
        logits = self(x)
        self._add("test", self.loss_fn(logits, y), logits, y)
        self.test_metrics.update(logits, y)
        self.confusion.update(logits, y)

    # -- epoch ends --------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        """Remember the learning rate this epoch trains with (the scheduler steps before the epoch end hook)."""
        self._epoch_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])

    def on_validation_epoch_end(self) -> None:
        """Compute validation metrics (kept for the train-epoch end, which runs after validation)."""
        loss, _ = self._take("val")
        metrics = {k: float(v) for k, v in self.val_metrics.compute().items()}
        self.val_metrics.reset()
        if self.trainer.sanity_checking:
            return
        self._val = {"val_loss": loss, **metrics}
        self.log_dict(self._val, sync_dist=False)

    def on_train_epoch_end(self) -> None:
        """Assemble the epoch's record: train/val loss and accuracy, their gap, the learning rate."""
        loss, acc = self._take("train")
        row: dict[str, float] = {"epoch": float(self.current_epoch), "train_loss": loss, "train_acc": acc}
        row.update(self._val)
        if "val_acc" in self._val:
            row["gap_acc"] = acc - self._val["val_acc"]
            row["gap_loss"] = self._val["val_loss"] - loss
        row["lr"] = self._epoch_lr
        self._val = {}
        self.history.append(row)
        self.log_dict({k: v for k, v in row.items() if k != "epoch"}, sync_dist=False)

    def on_test_epoch_end(self) -> None:
        """Final test metrics and the confusion matrix."""
        loss, _ = self._take("test")
        self.test_results = {"test_loss": loss, **{k: float(v) for k, v in self.test_metrics.compute().items()}}
        self.test_metrics.reset()
        # compute() synchronises across DDP ranks, so every rank must call it here, not rank 0 later
        self.test_confusion = self.confusion.compute().cpu().numpy()
        self.confusion.reset()
        self.log_dict(self.test_results, sync_dist=False)

    def configure_callbacks(self) -> list[Any]:
        """Callbacks the model asks for (a transfer model's gradual unfreezing), merged into the Trainer's."""
        hook = getattr(self.model, "callbacks", None)
        return list(hook()) if callable(hook) else []

    def configure_optimizers(self) -> Any:
        """Optimiser and schedule from the config's registries."""
        opt = create_optimizer(self.model, self.cfg.optim)
        epochs = self.cfg.trainer.max_epochs
        steps = max(1, int(self.trainer.estimated_stepping_batches) // epochs)
        return {"optimizer": opt, "lr_scheduler": create_scheduler(opt, self.cfg.optim.schedule, epochs, steps)}
