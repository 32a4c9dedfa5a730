"""Loss functions by name (``task.loss``). Each factory takes the run config and returns a module
``(logits, targets) -> scalar`` whose value is averaged over the minibatch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from dlsuite.config import RunConfig
from dlsuite.registry import Registry

LOSSES: Registry[Callable[[RunConfig], nn.Module]] = Registry("losses", "loss functions")


@LOSSES.register("cross_entropy")
def _cross_entropy(cfg: RunConfig) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=cfg.regularization.label_smoothing)


class _NLLOnLogits(nn.Module):
    """Negative log-likelihood of log-softmax outputs (the model emits logits)."""

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(F.log_softmax(logits, dim=-1), y)


@LOSSES.register("nll")
def _nll(cfg: RunConfig) -> nn.Module:
    return _NLLOnLogits()


def create_loss(cfg: RunConfig) -> nn.Module:
    """The loss module that ``cfg.task.loss`` names."""
    return LOSSES.get(cfg.task.loss, what="loss")(cfg)
