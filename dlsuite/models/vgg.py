"""VGG (Simonyan & Zisserman, 2014): stages of 3x3 convolutions, each stage closed by a 2x2 pool.

Depth is ``stages`` x ``depth`` convolutions (VGG-16 is 5 stages of 2-3); width starts at ``width``
and doubles per stage up to 8x. ``norm: batch`` gives the VGG-BN variant, which is what lets deep
plain stacks train at all; ``norm: none`` with ``depth`` raised shows why.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import register_model
from dlsuite.models.common import ClassifierHead, can_pool, conv_norm_act, output_shape, spatial_dims
from dlsuite.models.knobs import HIDDEN, Activation, Depth, Dropout, Head, Norm, Pool, Stages, Width


@register_model("vgg")
class VGG(nn.Module):
    """``stages`` x (``depth`` x conv3x3-norm-act, then pool) -> head; ``hidden`` > 0 adds VGG's two fc layers."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        width: Width = 16,
        stages: Stages = 3,
        depth: Depth = 2,
        hidden: Annotated[int, HIDDEN.where(ge=0)] = 0,
        dropout: Dropout = 0.0,
        norm: Norm = "batch",
        activation: Activation = "relu",
        pool: Pool = "max",
        head: Head = "flatten",
    ) -> None:
        super().__init__()
        dims = spatial_dims(input_shape)
        mods: list[nn.Module] = []
        in_ch = input_shape[0]
        for s in range(stages):
            out_ch = width * min(2**s, 8)
            for _ in range(depth):
                mods.append(conv_norm_act(dims, in_ch, out_ch, 3, norm=norm, activation=activation))
                in_ch = out_ch
            if can_pool(output_shape(nn.Sequential(*mods), input_shape)):
                mods.append(layers.pool(pool, dims))
        self.features = nn.Sequential(*mods)
        feat = output_shape(self.features, input_shape)
        fc = (hidden, hidden) if hidden else ()
        self.head = ClassifierHead(head, feat, num_classes, dropout=dropout, hidden=fc, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, C, *S) -> (B, C', *S/2^stages) -> (B, classes)
