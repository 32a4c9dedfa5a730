"""What a task is given: everything it trains with, built by the composition root (``dlsuite.build``).

A task never sees the run config: it receives the loss, the training objective and factories for its
optimiser and schedule (they need the model's parameters and the loop's length, which only exist once
training starts), in the manner of lightning-hydra-template's ``MNISTLitModule(net, optimizer, scheduler)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer, int, int], dict[str, Any]]
"""``(optimizer, max_epochs, steps_per_epoch) -> Lightning lr_scheduler dict``."""


class Objective(Protocol):
    """The training objective of a classification step: augmentation, mixing, penalties on top of the loss.

    Returns ``(logits, loss, total)``: the logits, the data loss and the loss to minimise.
    """

    last_penalty: torch.Tensor | None

    def __call__(
        self, model: nn.Module, loss_fn: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


@dataclass
class Components:
    """The built parts a task trains with."""

    optimizer: OptimizerFactory
    scheduler: SchedulerFactory
    loss: nn.Module | None = None
    """The data loss (``None`` for a task with its own, such as reconstruction)."""
    objective: Objective | None = None
    """Augmentation, mixup / cutmix and penalties around the loss (classification)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Options of the task itself (reconstruction: ``recon_loss``, ``kl_weight``)."""
    hparams: dict[str, Any] = field(default_factory=dict)
    """Plain data saved in the checkpoint (the run config), so that it can rebuild its model."""
