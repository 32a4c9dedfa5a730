"""The classification task: any registered backbone, a loss, torchmetrics, optimiser and schedule.

Loss and accuracy are summed on the device during the epoch and read once at its end
(:class:`~dlsuite.tasks.epoch.EpochTask`), so the training step never waits for the host; validation
and test add torchmetrics' macro-F1, and test a confusion matrix.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassF1Score

from dlsuite.tasks.components import Components
from dlsuite.tasks.epoch import EpochTask


class ClassificationTask(EpochTask):
    """Wraps a plain ``nn.Module`` that maps inputs to class logits.

    Args:
        model: the backbone, ``(B, *input_shape) -> (B, num_classes)``.
        parts: its loss, training objective (augmentation, mixing, penalties), optimiser and schedule.
        num_classes: number of classes.
        input_shape: shape of one example, kept in the checkpoint so the model can be rebuilt.
    """

    MEANS = {"loss": "n", "acc": "n"}
    EXTRA_METRICS = ("f1",)  # the torchmetrics collection below, on validation and test

    def __init__(self, model: nn.Module, parts: Components, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__(model, parts, num_classes, input_shape)
        assert parts.loss is not None and parts.objective is not None, "classification needs a loss and objective"
        self.loss_fn = parts.loss
        self.objective = parts.objective  # augmentation, mixup / cutmix, L1 / L2 penalties
        # Accuracy comes from the device-side sums (EpochTask); torchmetrics adds what sums cannot give.
        metrics = MetricCollection({"f1": MulticlassF1Score(num_classes, average="macro")})
        self.val_metrics = metrics.clone(prefix="val_")
        self.test_metrics = metrics.clone(prefix="test_")
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.test_confusion: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)``."""
        return self.model(x)

    def _add(self, stage: str, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        # The count is a host int (a shape): no host-to-device copy in the step.
        n = len(y)
        self.add(stage, {"loss": loss * n, "acc": (logits.argmax(-1) == y).sum(), "n": n})

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
    def stage_metrics(self, stage: str) -> dict[str, float]:
        """Mean loss and accuracy; on validation and test also torchmetrics' macro-F1."""
        out = self.take(stage)
        collection = {"val": self.val_metrics, "test": self.test_metrics}.get(stage)
        if collection is not None:
            # compute() synchronises across DDP ranks, so every rank must call it here, not rank 0 later
            out.update({k: float(v) for k, v in collection.compute().items()})
            collection.reset()
        if stage == "test":
            self.test_confusion = self.confusion.compute().cpu().numpy()
            self.confusion.reset()
        return out
