"""DenseNet (Huang et al., 2016): every layer of a dense block sees the concatenation of all before it.

A layer adds ``growth_rate`` channels (norm -> act -> 1x1 conv to 4k -> norm -> act -> 3x3 conv to k,
the DenseNet-BC bottleneck); transitions between dense blocks (stages) compress channels by ``compression`` with
a 1x1 conv and halve resolution with a 2x2 pool.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import register_model
from dlsuite.models.common import ConvClassifier, can_pool, output_shape, spatial_dims
from dlsuite.models.knobs import Knob


class DenseLayer(nn.Module):
    """Pre-activation bottleneck layer producing ``growth`` new channels, concatenated to its input."""

    def __init__(self, dims: int, in_ch: int, growth: int, norm: str, activation: str, dropout: float) -> None:
        super().__init__()
        conv = layers.conv(dims)
        self.net = nn.Sequential(
            layers.norm(norm, dims, in_ch),
            layers.activation(activation),
            conv(in_ch, 4 * growth, 1, bias=False),
            layers.norm(norm, dims, 4 * growth),
            layers.activation(activation),
            conv(4 * growth, growth, 3, padding=1, bias=False),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.net(x)], dim=1)  # (B, C + growth, *S)


@register_model("densenet")
class DenseNet(ConvClassifier, stages=3, depth=4, pool="avg"):
    """Stem conv -> (dense block -> transition) x ``stages`` (no transition after the last) -> head.

    DenseNet-BC: ``stages`` dense blocks of ``depth`` layers, each adding ``growth_rate`` channels;
    ``dropout`` is inside the dense layers (the head has none).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        growth_rate: Annotated[int, Knob("channels each dense layer adds", ge=1)] = 12,
        compression: Annotated[float, Knob("channel fraction a transition keeps", gt=0, le=1)] = 0.5,
        **knobs: Any,
    ) -> None:
        super().__init__(**knobs)
        k = self.knobs
        dims = spatial_dims(input_shape)
        conv = layers.conv(dims)
        ch = 2 * growth_rate
        mods: list[nn.Module] = [conv(input_shape[0], ch, 3, padding=1, bias=False)]
        for b in range(k.stages):
            for _ in range(k.depth):
                mods.append(DenseLayer(dims, ch, growth_rate, k.norm, k.activation, k.dropout))
                ch += growth_rate
            if b < k.stages - 1:
                out = max(1, int(ch * compression))
                mods += [layers.norm(k.norm, dims, ch), layers.activation(k.activation), conv(ch, out, 1, bias=False)]
                ch = out
                if can_pool(output_shape(nn.Sequential(*mods), input_shape)):
                    mods.append(layers.pool(k.pool, dims))
        mods += [layers.norm(k.norm, dims, ch), layers.activation(k.activation)]
        self.features = nn.Sequential(*mods)
        self.head = self.classifier(input_shape, num_classes, dropout=0.0)
