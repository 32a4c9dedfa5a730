"""SENet (Hu et al., 2017): residual blocks whose channels are re-weighted by squeeze-and-excitation.

Squeeze: global average pool to one value per channel. Excite: a two-layer bottleneck MLP
(``reduction`` x narrower) and a sigmoid give each channel a gate in (0, 1) that scales its map.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import nn

from dlsuite.models.api import register_model
from dlsuite.models.knobs import Knob
from dlsuite.models.resnet import ResNet


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
class SENet(ResNet):
    """SE-ResNet: the ``resnet`` family (every knob of it) with a squeeze-and-excitation gate in every block."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        reduction: Annotated[int, Knob("how much narrower the excitation MLP is than the block", ge=1)] = 8,
        **knobs: Any,
    ) -> None:
        self.reduction = reduction  # a plain int, read by channel_attention during ResNet's __init__
        super().__init__(input_shape, num_classes, **knobs)

    def channel_attention(self, channels: int) -> nn.Module:
        """Squeeze-and-excitation of the block's ``channels`` outputs."""
        return SqueezeExcite(channels, self.reduction)
