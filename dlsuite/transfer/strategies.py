"""Transfer strategies by name (``model.strategy``, ``dlsuite list transfer_strategies``).

- ``feature_extract``: the backbone is frozen for the whole run; only the new head learns.
- ``finetune``: every layer learns from the start, the backbone at ``backbone_lr`` (by default
  ``optim.lr * backbone_lr_scale``, i.e. lower than the head's).
- ``gradual_unfreeze``: like Lightning's ``BackboneFinetuning``: the head learns alone first; from epoch
  ``unfreeze_epoch`` the backbone is unfrozen in ``unfreeze_stages`` chunks, the top (last) chunk first
  and one more every ``unfreeze_every`` epochs.

Unlike ``BackboneFinetuning``, which adds the backbone to the optimiser when it unfreezes it, every
parameter sits in the optimiser from the start (a frozen one simply has no gradient, so no optimiser
steps or decays it): the learning-rate schedule then covers the backbone's group too, and its learning
rate is the configured ``backbone_lr`` instead of a ratio of the head's at that moment.

Frozen BatchNorm layers are kept in eval mode by default (``frozen_bn: eval``): their running statistics
stay those of pretraining, which is what "frozen" should mean; ``frozen_bn: train`` lets them adapt
their statistics to the new data while their affine weights stay fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import nn

from dlsuite.registry import Registry


@dataclass(frozen=True)
class Strategy:
    """How a backbone is trained: frozen at the start, and when (if ever) it is unfrozen."""

    name: str
    frozen_at_start: bool
    unfreezes: bool
    help: str


TRANSFER_STRATEGIES: Registry[Strategy] = Registry("transfer_strategies", "how a pretrained backbone is trained")
for _s in (
    Strategy("feature_extract", True, False, "frozen backbone, only the new head learns"),
    Strategy("finetune", False, False, "every layer learns, the backbone at a lower learning rate"),
    Strategy("gradual_unfreeze", True, True, "head first, then the backbone top-down from unfreeze_epoch"),
):
    TRANSFER_STRATEGIES.add(_s.name, _s)


def set_trainable(module: nn.Module, trainable: bool) -> None:
    """Switch gradients of every parameter of ``module`` on or off."""
    for p in module.parameters():
        p.requires_grad_(trainable)


def stages(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's layers in forward order, at block granularity, for unfreezing top-down.

    Containers (``nn.Sequential`` / ``nn.ModuleList``, such as EfficientNet's ``blocks`` or a ResNet's
    ``layer3``) are opened one level so that a stage is a block, not a whole network; modules without
    parameters are skipped.
    """
    out: list[nn.Module] = []

    def visit(m: nn.Module, depth: int) -> None:
        children = list(m.children())
        if children and (depth == 0 or isinstance(m, nn.Sequential | nn.ModuleList)) and depth < 3:
            for c in children:
                visit(c, depth + 1)
        elif any(True for _ in m.parameters()):
            out.append(m)

    visit(backbone, 0)
    return out or [backbone]


def chunks(layers: list[nn.Module], n: int) -> list[list[nn.Module]]:
    """Split ``layers`` into ``n`` contiguous chunks, as even as possible (fewer if there are fewer layers)."""
    n = max(1, min(n, len(layers)))
    size, extra = divmod(len(layers), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(layers[start:end])
        start = end
    return out


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
                        set_trainable(m, True)
                        changed = True
        if changed:
            self.net.train(self.net.training)
