"""MobileNet (Howard et al., 2017): depthwise-separable convolutions.

A k x k convolution from C to C' channels costs k*k*C*C' multiply-adds per position; a depthwise
k x k (one filter per channel, ``groups=C``) followed by a pointwise 1x1 costs k*k*C + C*C', about
k*k times less. The logged FLOPs per example show the saving against ``cnn``/``vgg`` of equal width.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dlsuite.models.api import register_model
from dlsuite.models.common import ConvClassifier, conv_norm_act, spatial_dims


class DepthwiseSeparable(nn.Module):
    """Depthwise k x k (stride) -> norm -> act -> pointwise 1x1 -> norm -> act."""

    def __init__(
        self, dims: int, in_ch: int, out_ch: int, kernel: int, stride: int, norm: str, activation: str
    ) -> None:
        super().__init__()
        self.depthwise = conv_norm_act(
            dims, in_ch, in_ch, kernel, stride=stride, groups=in_ch, norm=norm, activation=activation
        )
        self.pointwise = conv_norm_act(dims, in_ch, out_ch, 1, norm=norm, activation=activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))  # (B, C, *S) -> (B, C', *S/stride)


@register_model("mobilenet")
class MobileNet(ConvClassifier, width=16, stages=3, depth=2, kernel_size=3):
    """Stem conv -> ``stages`` x ``depth`` separable blocks (stride 2 and double width per stage) -> head.

    MobileNet-v1 style; ``width`` is the stem's channels (the width multiplier).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, **knobs: Any) -> None:
        super().__init__(**knobs)
        k = self.knobs
        dims = spatial_dims(input_shape)
        mods: list[nn.Module] = [conv_norm_act(dims, input_shape[0], k.width, 3, norm=k.norm, activation=k.activation)]
        in_ch = k.width
        for s in range(k.stages):
            for b in range(k.depth):
                out_ch = k.width * 2 ** (s + 1)
                stride = 2 if s > 0 and b == 0 else 1
                mods.append(DepthwiseSeparable(dims, in_ch, out_ch, k.kernel_size, stride, k.norm, k.activation))
                in_ch = out_ch
        self.features = nn.Sequential(*mods)
        self.head = self.classifier(input_shape, num_classes)
