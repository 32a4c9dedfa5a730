"""LeNet-5 (LeCun et al., 1998): two conv + subsampling stages, then three fully connected layers.

Historic defaults: tanh and average pooling ("subsampling"); ``activation: relu`` and ``pool: max``
give the modern variant. Convolutions pad to keep sizes, so 8x8 digits and 40-step sequences fit.
"""

from __future__ import annotations

import torch
from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import register_model
from dlsuite.models.common import ClassifierHead, can_pool, output_shape, spatial_dims
from dlsuite.models.knobs import Activation, Dropout, Head, Hidden, KernelSize, Norm, Pool, Width


@register_model("lenet")
class LeNet(nn.Module):
    """conv(width, k) -> act -> pool -> conv(16/6 * width, k) -> act -> pool -> fc -> fc -> classes.

    ``width`` = first conv channels (6), ``hidden`` = first fc width (120).
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        width: Width = 6,
        hidden: Hidden = 120,
        kernel_size: KernelSize = 5,
        activation: Activation = "tanh",
        pool: Pool = "avg",
        norm: Norm = "none",
        dropout: Dropout = 0.0,
        head: Head = "flatten",
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
        self.head = ClassifierHead(
            head, feat, num_classes, dropout=dropout, hidden=(hidden, max(1, hidden * 84 // 120)), activation=activation
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, C, *S) -> (B, C', *S/4) -> (B, classes)
