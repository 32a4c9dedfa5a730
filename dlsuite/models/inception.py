"""Inception / GoogLeNet (Szegedy et al., 2014): modules of parallel 1x1, 3x3, 5x5 and pool branches.

Each branch but the 1x1 starts with a 1x1 "reduction" convolution that cuts channels before the
expensive kernel, which is why the module is cheap for its width. Branch outputs are concatenated.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import register_model
from dlsuite.models.common import ConvClassifier, can_pool, conv_norm_act, output_shape, spatial_dims


class InceptionModule(nn.Module):
    """1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | pool 3x3 -> 1x1, concatenated: ``3 * width`` channels out."""

    def __init__(self, dims: int, in_ch: int, width: int, norm: str, activation: str, pool: str) -> None:
        super().__init__()
        half, quarter = max(1, width // 2), max(1, width // 4)

        def cna(i: int, o: int, k: int) -> nn.Sequential:
            return conv_norm_act(dims, i, o, k, norm=norm, activation=activation)

        self.b1 = cna(in_ch, width, 1)
        self.b3 = nn.Sequential(cna(in_ch, half, 1), cna(half, width, 3))
        self.b5 = nn.Sequential(cna(in_ch, quarter, 1), cna(quarter, half, 5))
        pool_cls = {
            ("max", 1): nn.MaxPool1d,
            ("max", 2): nn.MaxPool2d,
            ("avg", 1): nn.AvgPool1d,
            ("avg", 2): nn.AvgPool2d,
        }[(pool, dims)]
        self.bp = nn.Sequential(pool_cls(3, stride=1, padding=1), cna(in_ch, half, 1))
        self.out_channels = width + width + half + half

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], dim=1)  # (B, 3w, *S)


@register_model("inception")
class Inception(ConvClassifier, width=16, depth=4, pool="max"):
    """Stem conv -> ``depth`` inception modules (a 2x2 max-pool after every second) -> head.

    ``pool`` is the kind of the modules' pool branch.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, **knobs: Any) -> None:
        super().__init__(**knobs)
        k = self.knobs
        dims = spatial_dims(input_shape)
        mods: list[nn.Module] = [conv_norm_act(dims, input_shape[0], k.width, 3, norm=k.norm, activation=k.activation)]
        in_ch = k.width
        for i in range(k.depth):
            block_width = k.width * (1 + i // 2)  # widen as resolution drops, as GoogLeNet does
            module = InceptionModule(dims, in_ch, block_width, k.norm, k.activation, k.pool)
            mods.append(module)
            in_ch = module.out_channels
            if i % 2 == 1 and i < k.depth - 1 and can_pool(output_shape(nn.Sequential(*mods), input_shape)):
                mods.append(layers.pool("max", dims))
        self.features = nn.Sequential(*mods)
        self.head = self.classifier(input_shape, num_classes)
