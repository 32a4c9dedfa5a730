"""The gradual-unfreezing callback of the ``gradual_unfreeze`` transfer strategy (see ``strategies``).

Kept apart from ``strategies`` so that naming and checking a strategy does not import Lightning.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning, Callback
from torch import nn

from dlsuite.transfer.strategies import chunks, stages


class GradualUnfreeze(Callback):
    """Unfreezes a transfer model's backbone chunk by chunk, top-down, at the start of training epochs.

    Args:
        net: the transfer model (it has ``backbone`` and re-applies its BatchNorm policy on ``train()``).
        first_epoch: epoch at which the top chunk unfreezes.
        num_stages: number of chunks.
        every: epochs between two chunks.
    """

    def __init__(self, net: nn.Module, first_epoch: int, num_stages: int, every: int) -> None:
        self.net = net
        self.first_epoch = first_epoch
        self.every = every
        backbone = net.get_submodule("backbone")
        # reversed: the layers nearest the head (most task-specific) unfreeze first
        self.schedule = list(reversed(chunks(stages(backbone), num_stages)))

    def unfreeze_epoch_of(self, stage: int) -> int:
        """Epoch at which chunk ``stage`` (0 = nearest the head) unfreezes."""
        return self.first_epoch + stage * self.every

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Unfreeze every chunk that is due, then re-apply the BatchNorm policy."""
        changed = False
        for i, chunk in enumerate(self.schedule):
            if trainer.current_epoch >= self.unfreeze_epoch_of(i):
                for m in chunk:
                    if not all(p.requires_grad for p in m.parameters()):
                        BaseFinetuning.make_trainable(m)
                        changed = True
        if changed:
            self.net.train(self.net.training)
