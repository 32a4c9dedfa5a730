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


def freeze(module: nn.Module) -> None:
    """Stop gradients to every parameter of ``module``; its BatchNorm layers keep tracking statistics.

    Not Lightning's ``BaseFinetuning.freeze``: it also sets ``track_running_stats=False`` on frozen
    BatchNorm layers, so ``frozen_bn: train`` could no longer adapt their statistics (they would use
    batch statistics instead), and it would make building the model import Lightning. Unfreezing, inside
    a Lightning callback, is Lightning's ``BaseFinetuning.make_trainable`` (see ``unfreeze``).
    """
    for p in module.parameters():
        p.requires_grad_(False)


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
