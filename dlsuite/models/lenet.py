"""LeNet-5 (LeCun et al., 1998): two conv + subsampling stages, then three fully connected layers.

Historic defaults: tanh and average pooling ("subsampling"); ``activation: relu`` and ``pool: max``
give the modern variant. Convolutions pad to keep sizes, so 8x8 digits and 40-step sequences fit.
"""

from __future__ import annotations

import torch
from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import register_model
from dlsuite.models.common import Head, can_pool, check_choice, output_shape, spatial_dims


class LeNet(nn.Module):
    """conv(width, k) -> act -> pool -> conv(16/6 * width, k) -> act -> pool -> fc -> fc -> classes."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        width: int,
        hidden: int,
        kernel_size: int,
        activation: str,
        pool: str,
        norm: str,
        dropout: float,
        head: str,
    ) -> None:
        super().__init__()
        dims = spatial_dims(input_shape)
        conv = layers.conv(dims)
        chans = (width, max(1, round(width * 16 / 6)))  # LeNet-5: 6 then 16 feature maps
        mods: list[nn.Module] = []
        in_ch, shape = input_shape[0], input_shape
        for out_ch in chans:
            mods += [
                conv(in_ch, out_ch, kernel_size, padding=kernel_size // 2),
                layers.norm(norm, dims, out_ch),
                layers.activation(activation),
            ]
            shape = output_shape(nn.Sequential(*mods), input_shape)
            if can_pool(shape):
                mods.append(layers.pool(pool, dims))
            in_ch = out_ch
        self.features = nn.Sequential(*mods)
        feat = output_shape(self.features, input_shape)
        # LeNet-5's 120 -> 84 fully connected layers, scaled together by ``hidden``.
        self.head = Head(
            head, feat, num_classes, dropout=dropout, hidden=(hidden, max(1, hidden * 84 // 120)), activation=activation
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, C, *S) -> (B, C', *S/4) -> (B, classes)


@register_model("lenet")
def lenet(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 6,
    hidden: int = 120,
    kernel_size: int = 5,
    activation: str = "tanh",
    pool: str = "avg",
    norm: str = "none",
    dropout: float = 0.0,
    head: str = "flatten",
) -> nn.Module:
    """LeNet-5 in 1D or 2D; ``width`` = first conv channels (6), ``hidden`` = first fc width (120)."""
    check_choice("pool", pool, ("max", "avg"))
    if width < 1 or hidden < 1 or not 0.0 <= dropout < 1.0:
        raise ValueError("need width >= 1, hidden >= 1, 0 <= dropout < 1")
    return LeNet(input_shape, num_classes, width, hidden, kernel_size, activation, pool, norm, dropout, head)
