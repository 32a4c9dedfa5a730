"""VGG (Simonyan & Zisserman, 2014): stages of 3x3 convolutions, each stage closed by a 2x2 pool.

Depth is ``stages`` x ``depth`` convolutions (VGG-16 is 5 stages of 2-3); width starts at ``width``
and doubles per stage up to 8x. ``norm: batch`` gives the VGG-BN variant, which is what lets deep
plain stacks train at all; ``norm: none`` with ``depth`` raised shows why.
"""

from __future__ import annotations

from typing import Annotated, Any

from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import register_model
from dlsuite.models.common import ConvClassifier, can_pool, conv_norm_act, output_shape, spatial_dims
from dlsuite.models.knobs import HIDDEN

FcHidden = Annotated[int, HIDDEN.where(ge=0)]  # 0: no fully connected layers in the head


@register_model("vgg")
class VGG(ConvClassifier, width=16, stages=3, depth=2, pool="max", head="flatten"):
    """``stages`` x (``depth`` x conv3x3-norm-act, then pool) -> head; ``hidden`` > 0 adds VGG's two fc layers."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *, hidden: FcHidden = 0, **knobs: Any) -> None:
        super().__init__(**knobs)
        k = self.knobs
        dims = spatial_dims(input_shape)
        mods: list[nn.Module] = []
        in_ch = input_shape[0]
        for s in range(k.stages):
            out_ch = k.width * min(2**s, 8)
            for _ in range(k.depth):
                mods.append(conv_norm_act(dims, in_ch, out_ch, 3, norm=k.norm, activation=k.activation))
                in_ch = out_ch
            if can_pool(output_shape(nn.Sequential(*mods), input_shape)):
                mods.append(layers.pool(k.pool, dims))
        self.features = nn.Sequential(*mods)
        self.head = self.classifier(input_shape, num_classes, hidden=(hidden, hidden) if hidden else ())
