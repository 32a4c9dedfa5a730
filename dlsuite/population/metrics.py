"""Per-member classification numbers from stacked logits: confusion matrices, accuracy, macro-F1.

A sequential run computes macro-F1 with torchmetrics' ``MulticlassF1Score(average="macro")``; here one
``bincount`` gives every member's confusion matrix at once and the F1 follows torchmetrics' rule: a
class absent from both targets and predictions is left out of the mean (``tests/test_population_study.py``
checks the two agree).
"""

from __future__ import annotations

import torch


def confusion(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(P, C, C)`` counts (row: true class, column: predicted) from logits ``(P, N, C)`` and targets ``(N,)``."""
    p, _, c = logits.shape
    pred = logits.argmax(-1)  # (P, N)
    member = torch.arange(p, device=logits.device).unsqueeze(1)
    index = (member * c + y.unsqueeze(0)) * c + pred
    return torch.bincount(index.flatten(), minlength=p * c * c).view(p, c, c)


def macro_f1(conf: torch.Tensor) -> torch.Tensor:
    """Each member's macro-F1 ``(P,)`` from its confusion matrix ``(P, C, C)``."""
    conf = conf.double()
    tp = conf.diagonal(dim1=1, dim2=2)
    fp = conf.sum(1) - tp
    fn = conf.sum(2) - tp
    seen = (tp + fp + fn) > 0
    f1 = torch.where(seen, 2 * tp / (2 * tp + fp + fn).clamp_min(1), torch.zeros_like(tp))
    return f1.sum(1) / seen.sum(1).clamp_min(1)


def accuracy(conf: torch.Tensor) -> torch.Tensor:
    """Each member's accuracy ``(P,)`` from its confusion matrix."""
    conf = conf.double()
    return conf.diagonal(dim1=1, dim2=2).sum(1) / conf.sum((1, 2)).clamp_min(1)
