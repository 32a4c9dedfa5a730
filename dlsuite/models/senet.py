"""SENet (Hu et al., 2017): residual blocks whose channels are re-weighted by squeeze-and-excitation.

Squeeze: global average pool to one value per channel. Excite: a two-layer bottleneck MLP
(``reduction`` x narrower) and a sigmoid give each channel a gate in (0, 1) that scales its map.
"""

from __future__ import annotations

import torch
from torch import nn

from dlsuite.models.api import register_model
from dlsuite.models.resnet import ResNet, check_resnet_knobs


class SqueezeExcite(nn.Module):
    """Channel attention: ``x * sigmoid(W2 relu(W1 mean(x)))``."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.flatten(2).mean(-1)  # (B, C)
        gate = self.fc(squeezed)  # (B, C) in (0, 1)
        return x * gate.view(*gate.shape, *([1] * (x.dim() - 2)))


@register_model("senet")
def senet(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 16,
    stages: int = 3,
    depth: int = 2,
    block: str = "basic",
    reduction: int = 8,
    shortcut: bool = True,
    dropout: float = 0.0,
    norm: str = "batch",
    activation: str = "relu",
    head: str = "gap",
) -> nn.Module:
    """SE-ResNet: the ``resnet`` family with a squeeze-and-excitation gate in every block."""
    check_resnet_knobs(width, stages, depth, block, dropout)
    if reduction < 1:
        raise ValueError("need reduction >= 1")
    return ResNet(
        input_shape,
        num_classes,
        width,
        stages,
        depth,
        block,
        shortcut,
        dropout,
        norm,
        activation,
        head,
        attention=lambda ch: SqueezeExcite(ch, reduction),
    )
