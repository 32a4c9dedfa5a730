"""LeNet-5 (LeCun et al., 1998): two conv + subsampling stages, then three fully connected layers.

Historic defaults: tanh and average pooling ("subsampling"); ``activation: relu`` and ``pool: max``
give the modern variant. Convolutions pad to keep sizes, so 8x8 digits and 40-step sequences fit.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import register_model
from dlsuite.models.common import ConvClassifier, can_pool, output_shape, spatial_dims


@register_model("lenet")
class LeNet(
    ConvClassifier, width=6, hidden=120, kernel_size=5, norm="none", activation="tanh", pool="avg", head="flatten"
):
    """conv(width, k) -> act -> pool -> conv(16/6 * width, k) -> act -> pool -> fc -> fc -> classes.

    ``width`` = first conv channels (6), ``hidden`` = first fc width (120).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, **knobs: Any) -> None:
        super().__init__(**knobs)
        k = self.knobs
        dims = spatial_dims(input_shape)
        conv = layers.conv(dims)
        chans = (k.width, max(1, round(k.width * 16 / 6)))  # LeNet-5: 6 then 16 feature maps
        mods: list[nn.Module] = []
        in_ch, shape = input_shape[0], input_shape
        for out_ch in chans:
            mods += [
                conv(in_ch, out_ch, k.kernel_size, padding=k.kernel_size // 2),
                layers.norm(k.norm, dims, out_ch),
                layers.activation(k.activation),
            ]
            shape = output_shape(nn.Sequential(*mods), input_shape)
            if can_pool(shape):
                mods.append(layers.pool(k.pool, dims))
            in_ch = out_ch
        self.features = nn.Sequential(*mods)
        # LeNet-5's 120 -> 84 fully connected layers, scaled together by ``hidden``.
        self.head = self.classifier(input_shape, num_classes, hidden=(k.hidden, max(1, k.hidden * 84 // 120)))
