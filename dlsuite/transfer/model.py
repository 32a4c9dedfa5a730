"""The ``transfer`` model: input adapter -> pretrained backbone -> new head, as one registered model.

Transfer is a model (``model.name: transfer``), not a task: it then works with every task, loss,
optimiser, schedule, regulariser and study the suite has, and every knob below is a config key that
Optuna can search like any other (``model.backbone_lr``, ``optim.lr`` for the head,
``model.unfreeze_epoch``...). Two small hooks connect it to the rest: ``param_groups(base_lr)`` gives
the optimiser separate backbone / head learning rates, and ``callbacks()`` gives the task the
gradual-unfreezing callback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from dlsuite.errors import ConfigError
from dlsuite.models.api import register_model
from dlsuite.tracking import record
from dlsuite.transfer.providers import Backbone, create_backbone, is_checkpoint_ref
from dlsuite.transfer.strategies import TRANSFER_STRATEGIES, freeze

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback


class InputAdapter(nn.Module):
    """Makes the task's inputs what the backbone expects, on the device, inside the model.

    Channels: 1 -> C by repetition, C -> 1 by averaging. Size: resized (bilinear for images, linear
    for sequences) to ``size``. Values: inputs in [0, 1] (``data.normalize: unit``) are normalised with
    the backbone's mean / std when it has them (``[-1, 1]`` for EfficientNet-Lite0).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        size: tuple[int, ...] | None,
        mean: tuple[float, ...] | None,
        std: tuple[float, ...] | None,
    ) -> None:
        super().__init__()
        if in_channels != out_channels and 1 not in (in_channels, out_channels):
            raise ValueError(f"cannot adapt {in_channels} input channels to the backbone's {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.size = size
        self.normalise = mean is not None and std is not None
        shape = (1, out_channels)
        self.register_buffer("mean", torch.tensor(mean or (0.0,) * out_channels).view(*shape, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or (1.0,) * out_channels).view(*shape, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels != self.out_channels:  # (B, C_in, ...) -> (B, C_out, ...)
            x = x.expand(-1, self.out_channels, *x.shape[2:]) if self.in_channels == 1 else x.mean(1, keepdim=True)
        if self.size is not None and tuple(x.shape[2:]) != self.size:
            mode = "linear" if x.dim() == 3 else "bilinear"
            x = F.interpolate(x, size=self.size, mode=mode, align_corners=False)
        if self.normalise:
            x = (x - self.mean) / self.std
        return x


class TransferNet(nn.Module):
    """``adapter -> backbone -> dropout -> linear head``, with the strategy's freezing and BN policy.

    Args:
        backbone: the provider's feature extractor.
        num_classes: classes of the new task.
        adapter: the input adapter.
        strategy: a registered transfer strategy name.
        frozen_bn: ``eval`` keeps frozen BatchNorm layers' statistics fixed; ``train`` lets them update.
        backbone_lr: absolute backbone learning rate, or None for ``base_lr * backbone_lr_scale``.
        backbone_lr_scale: backbone learning rate relative to the head's.
        dropout: dropout before the head.
        unfreeze: (first epoch, stages, every) for ``gradual_unfreeze``.
        tags: facts about the backbone's origin, recorded on the MLflow run.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        adapter: InputAdapter,
        strategy: str,
        frozen_bn: str,
        backbone_lr: float | None,
        backbone_lr_scale: float,
        dropout: float,
        unfreeze: tuple[int, int, int],
        tags: dict[str, str],
    ) -> None:
        super().__init__()
        self.adapter = adapter
        self.backbone = backbone.module
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.num_features, num_classes))
        self.strategy = TRANSFER_STRATEGIES.get(strategy, what="transfer strategy")
        self.frozen_bn = frozen_bn
        self.backbone_lr = backbone_lr
        self.backbone_lr_scale = backbone_lr_scale
        self.unfreeze = unfreeze
        self.tracking_tags = tags
        if self.strategy.frozen_at_start:
            freeze(self.backbone)
        self.train()  # applies the BatchNorm policy to the frozen layers

    def backbone_frozen(self) -> bool:
        """True while no backbone parameter learns."""
        return not any(p.requires_grad for p in self.backbone.parameters())

    def train(self, mode: bool = True) -> TransferNet:
        """Set train / eval mode; frozen BatchNorm layers stay in eval mode when ``frozen_bn`` is ``eval``."""
        super().train(mode)
        if mode and self.frozen_bn == "eval":
            for m in self.backbone.modules():
                if isinstance(m, _BatchNorm) and not any(p.requires_grad for p in m.parameters(recurse=False)):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.adapter(x)  # (B, C, H, W) as the backbone expects
        if self.backbone_frozen():
            # no graph through a frozen backbone (less memory, no backward through it); BatchNorm
            # statistics still update under no_grad when frozen_bn is "train"
            with torch.no_grad():
                h = self.backbone(x)
        else:
            h = self.backbone(x)  # (B, F)
        return self.head(h.flatten(1))  # (B, classes)

    def param_groups(self, base_lr: float) -> list[dict[str, Any]]:
        """Optimiser groups: the head at ``base_lr`` (first, so the logged ``lr`` is the head's), the
        backbone at its own learning rate.

        Frozen backbone parameters are included on purpose: they get no gradient, so the optimiser
        leaves them alone, and gradual unfreezing needs no optimiser surgery.
        """
        lr = self.backbone_lr if self.backbone_lr is not None else base_lr * self.backbone_lr_scale
        return [
            {"params": list(self.head.parameters()), "lr": base_lr, "name": "head"},
            {"params": list(self.backbone.parameters()), "lr": lr, "name": "backbone"},
        ]

    def callbacks(self) -> list[Callback]:
        """Lightning callbacks the strategy needs (gradual unfreezing)."""
        if not self.strategy.unfreezes:
            return []
        from dlsuite.transfer.unfreeze import GradualUnfreeze

        first, n, every = self.unfreeze
        return [GradualUnfreeze(self, first, n, every)]


_FROZEN_BN = ("eval", "train")
_INPUT_NORM = ("backbone", "none")


@register_model("transfer")
def transfer(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    backbone: str = "efficientnet_lite0",
    pretrained: bool | str = True,
    strategy: str = "finetune",
    image_size: int | None = None,
    input_norm: str = "backbone",
    frozen_bn: str = "eval",
    backbone_lr: float | None = None,
    backbone_lr_scale: float = 0.1,
    unfreeze_epoch: int = 1,
    unfreeze_stages: int = 1,
    unfreeze_every: int = 1,
    dropout: float = 0.0,
) -> nn.Module:
    """A pretrained backbone (``dlsuite list backbones``) with a new head, trained by ``strategy``.

    ``pretrained``: true (cache / hub), false (same architecture from scratch) or a weights file.
    ``image_size``: resize inputs to this side (digits are 8x8: 32-64 suits ImageNet backbones).
    ``input_norm``: ``backbone`` expects inputs in [0, 1] (``data.normalize: unit``) and applies the
    backbone's normalisation; ``none`` feeds inputs unchanged.
    """
    if frozen_bn not in _FROZEN_BN:
        raise ValueError(f"frozen_bn must be one of {_FROZEN_BN}")
    if input_norm not in _INPUT_NORM:
        raise ValueError(f"input_norm must be one of {_INPUT_NORM}")
    if not 0.0 <= dropout < 1.0 or backbone_lr_scale <= 0 or (backbone_lr is not None and backbone_lr <= 0):
        raise ValueError("need 0 <= dropout < 1, backbone_lr_scale > 0, backbone_lr > 0")
    if unfreeze_epoch < 0 or unfreeze_stages < 1 or unfreeze_every < 1:
        raise ValueError("need unfreeze_epoch >= 0, unfreeze_stages >= 1, unfreeze_every >= 1")
    TRANSFER_STRATEGIES.get(strategy, what="transfer strategy")
    bb = create_backbone(backbone, pretrained)
    if bb.input_size is not None and is_checkpoint_ref(backbone):
        size: tuple[int, ...] | None = bb.input_size  # a suite model needs its exact input shape
    elif image_size is not None:
        size = (image_size,) * (len(input_shape) - 1)
    else:
        size = bb.input_size
    if len(input_shape) != 3 and not is_checkpoint_ref(backbone):
        raise ValueError(f"backbone {backbone!r} takes images (C, H, W); the data's examples are {input_shape}")
    mean, std = (bb.mean, bb.std) if input_norm == "backbone" else (None, None)
    adapter = InputAdapter(input_shape[0], bb.in_channels, size, mean, std)
    tags = {record.TRANSFER_BACKBONE: backbone, record.TRANSFER_STRATEGY: strategy, **bb.tags}
    return TransferNet(
        bb,
        num_classes,
        adapter,
        strategy,
        frozen_bn,
        backbone_lr,
        backbone_lr_scale,
        dropout,
        (unfreeze_epoch, unfreeze_stages, unfreeze_every),
        tags,
    )


def check_transfer_config(cfg: Any) -> None:
    """Cross-section checks for ``model.name: transfer`` (a RunConfig), before anything runs."""
    if cfg.model.name != "transfer":
        return
    from dlsuite.transfer.providers import BACKBONES

    knobs = cfg.model.knobs
    name = str(knobs.get("backbone", "efficientnet_lite0"))
    BACKBONES.get(name)
    TRANSFER_STRATEGIES.get(str(knobs.get("strategy", "finetune")), what="transfer strategy")
    if cfg.model.init != "default":
        raise ConfigError(
            "model.init does not apply to model 'transfer': the backbone keeps its pretrained weights and "
            "the new head starts from PyTorch's default; use model.pretrained=false for a from-scratch control"
        )
    strategy = str(knobs.get("strategy", "finetune"))
    if strategy == "gradual_unfreeze" and ("ddp" in cfg.trainer.strategy or "fsdp" in cfg.trainer.strategy):
        # DDP registers the parameters that need gradients once, when it wraps the model: layers
        # unfrozen later would never have their gradients averaged across processes
        raise ConfigError(
            "model.strategy=gradual_unfreeze does not work with trainer.strategy="
            f"{cfg.trainer.strategy!r}; use finetune or feature_extract for multi-GPU runs"
        )
    if (
        not is_checkpoint_ref(name)
        and knobs.get("input_norm", "backbone") == "backbone"
        and cfg.data.normalize != "unit"
    ):
        raise ConfigError(
            f"model 'transfer' with input_norm=backbone expects pixel values in [0, 1]: set data.normalize=unit "
            f"(got {cfg.data.normalize!r}), or model.input_norm=none to feed the data as it is"
        )
