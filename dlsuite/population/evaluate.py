"""Every member's validation or test numbers at once, as the sequential classification task computes them.

One vmapped forward per batch gives the members' logits ``(P, B, C)``; loss and accuracy are summed
on the device, and macro-F1 comes from torchmetrics' ``samplewise`` mode, which treats each member's
predictions as one sample: the same per-class counting as the sequential run's ``MulticlassF1Score``.
Best weights are kept per member (:class:`BestWeights`), so each member's best validation epoch is
what it is tested on, as the sequential run tests its best checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchmetrics.functional.classification import multiclass_confusion_matrix, multiclass_f1_score

from dlsuite.population.members import Stacked, Tensors, member_losses


@dataclass
class Scores:
    """Each member's numbers on one split, ``(P,)`` each, and its predictions ``(P, N)``."""

    loss: torch.Tensor
    acc: torch.Tensor
    f1: torch.Tensor
    preds: torch.Tensor

    def member(self, i: int, stage: str) -> dict[str, float]:
        """Member ``i``'s numbers named as the task logs them (``val_loss``, ``test_acc``, ...)."""
        return {
            f"{stage}_loss": float(self.loss[i]),
            f"{stage}_acc": float(self.acc[i]),
            f"{stage}_f1": float(self.f1[i]),
        }

    def confusion(self, i: int, y: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Member ``i``'s confusion matrix ``(C, C)`` (rows: true class) against labels ``y``."""
        return multiclass_confusion_matrix(self.preds[i], y.to(self.preds.device), num_classes)


@torch.no_grad()
def evaluate(
    stacked: Stacked,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    num_classes: int,
    smoothing: torch.Tensor | None = None,
) -> Scores:
    """Each member's mean loss (with its label smoothing, as the task's loss), accuracy and macro-F1 on ``(x, y)``."""
    loss = torch.zeros(stacked.size, device=x.device, dtype=torch.float64)
    preds = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        logits = stacked.forward_eval(xb)  # (P, B, C)
        loss += member_losses(logits, yb.expand(stacked.size, -1), smoothing).double() * len(yb)
        preds.append(logits.argmax(-1))
    pred = torch.cat(preds, dim=1)  # (P, N)
    target = y.expand(stacked.size, -1)
    acc = (pred == target).double().mean(1)
    f1 = multiclass_f1_score(pred, target, num_classes, average="macro", multidim_average="samplewise")
    return Scores(loss / len(x), acc, f1.double(), pred)


class BestWeights:
    """Each member's parameters and buffers at its best epoch so far by ``monitor`` (``mode``: min or max).

    A member's copy is replaced only when its value improves strictly, as Lightning's
    ``ModelCheckpoint`` keeps the first of equal epochs; a NaN never improves.
    """

    def __init__(self, stacked: Stacked, mode: str) -> None:
        self.mode = mode
        self.best = torch.full((stacked.size,), math.nan, dtype=torch.float64)
        self.params: Tensors = {k: v.detach().clone() for k, v in stacked.params.items()}
        self.buffers: Tensors = {k: v.clone() for k, v in stacked.buffers.items()}

    def update(self, stacked: Stacked, values: torch.Tensor) -> None:
        """Keep the current weights of the members whose ``values`` ``(P,)`` beat their best."""
        v = values.detach().double().cpu()
        better = v < self.best if self.mode == "min" else v > self.best
        better |= torch.isnan(self.best) & ~torch.isnan(v)
        if not bool(better.any()):
            return
        self.best = torch.where(better, v, self.best)
        for mine, theirs in ((self.params, stacked.params), (self.buffers, stacked.buffers)):
            for k, now in theirs.items():
                mask = better.to(now.device).view(-1, *([1] * (now.dim() - 1)))
                mine[k] = torch.where(mask, now.detach(), mine[k])

    def load_into(self, stacked: Stacked) -> None:
        """Give ``stacked`` the best weights (training is over: they are not leaves of any optimiser)."""
        stacked.params = {k: v.clone() for k, v in self.params.items()}
        stacked.buffers = {k: v.clone() for k, v in self.buffers.items()}
