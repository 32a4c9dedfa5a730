"""VGG (Simonyan & Zisserman, 2014): stages of 3x3 convolutions, each stage closed by a 2x2 pool.

Depth is ``stages`` x ``depth`` convolutions (VGG-16 is 5 stages of 2-3); width starts at ``width``
and doubles per stage up to 8x. ``norm: batch`` gives the VGG-BN variant, which is what lets deep
plain stacks train at all; ``norm: none`` with ``depth`` raised shows why.
"""

from __future__ import annotations

import torch
from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import register_model
from dlsuite.models.common import Head, can_pool, check_choice, conv_norm_act, output_shape, spatial_dims


class VGG(nn.Module):
    """``stages`` x (``depth`` x conv3x3-norm-act, then pool) -> head."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        width: int,
        stages: int,
        depth: int,
        hidden: int,
        dropout: float,
        norm: str,
        activation: str,
        pool: str,
        head: str,
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
        self.head = Head(head, feat, num_classes, dropout=dropout, hidden=fc, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, C, *S) -> (B, C', *S/2^stages) -> (B, classes)


@register_model("vgg")
def vgg(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 16,
    stages: int = 3,
    depth: int = 2,
    hidden: int = 0,
    dropout: float = 0.0,
    norm: str = "batch",
    activation: str = "relu",
    pool: str = "max",
    head: str = "flatten",
) -> nn.Module:
    """VGG with ``stages`` stages of ``depth`` 3x3 convs; ``hidden`` > 0 adds VGG's two fc layers."""
    check_choice("pool", pool, ("max", "avg"))
    if width < 1 or stages < 1 or depth < 1 or hidden < 0 or not 0.0 <= dropout < 1.0:
        raise ValueError("need width, stages, depth >= 1, hidden >= 0, 0 <= dropout < 1")
    return VGG(input_shape, num_classes, width, stages, depth, hidden, dropout, norm, activation, pool, head)
