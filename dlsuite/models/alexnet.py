"""AlexNet (Krizhevsky et al., 2012), scaled down for small inputs.

Five convolutions (widths 1, 3, 6, 4, 4 x ``width``; the original is ``width: 64``), max-pooling after
the first, second and fifth, optional local response normalisation (``lrn``) after the first two,
ReLU, and a classifier of two dropout-regularised hidden layers. The first layer's 11x11 stride-4
kernel becomes ``first_kernel_size`` stride 1, since 8x8 digits or 40-step sequences cannot afford it.
"""

from __future__ import annotations

from typing import Annotated, Any

from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import register_model
from dlsuite.models.common import ConvClassifier, can_pool, output_shape, spatial_dims
from dlsuite.models.knobs import Knob

_MULT = (1, 3, 6, 4, 4)  # 64, 192, 384, 256, 256 in the original
_POOL_AFTER = (0, 1, 4)


@register_model("alexnet")
class AlexNet(
    ConvClassifier, width=16, hidden=256, first_kernel_size=5, dropout=0.5, norm="none", pool="max", head="flatten"
):
    """conv -> [lrn] -> pool -> conv -> [lrn] -> pool -> conv -> conv -> conv -> pool -> 2 fc -> classes.

    ``dropout`` (0.5 as in the paper) regularises the fully connected layers.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        lrn: Annotated[bool, Knob("local response normalisation after the first two convolutions")] = False,
        **knobs: Any,
    ) -> None:
        super().__init__(**knobs)
        k = self.knobs
        dims = spatial_dims(input_shape)
        conv = layers.conv(dims)
        mods: list[nn.Module] = []
        in_ch = input_shape[0]
        for i, mult in enumerate(_MULT):
            out_ch = k.width * mult
            size = k.first_kernel_size if i == 0 else 3
            mods += [
                conv(in_ch, out_ch, size, padding=size // 2),
                layers.norm(k.norm, dims, out_ch),
                layers.activation(k.activation),
            ]
            if lrn and i < 2:
                mods.append(nn.LocalResponseNorm(5))  # the paper's "brightness normalisation"
            if i in _POOL_AFTER and can_pool(output_shape(nn.Sequential(*mods), input_shape)):
                mods.append(layers.pool(k.pool, dims))
            in_ch = out_ch
        self.features = nn.Sequential(*mods)
        self.head = self.classifier(input_shape, num_classes, hidden=(k.hidden, k.hidden))
