"""ResNet (He et al., 2015): residual blocks, basic (two 3x3) or bottleneck (1x1 -> 3x3 -> 1x1, x4).

``shortcut: false`` removes the identity path and leaves the same stack as a plain network, so a
study over ``depth`` with and without shortcuts shows the degradation problem the shortcut solves.
Blocks accept an optional channel-attention module: ``ResNet.channel_attention`` gives none, and
``senet.py``'s subclass gives squeeze-and-excitation.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import register_model
from dlsuite.models.common import ConvClassifier, conv_norm_act, spatial_dims

Attention = Callable[[int], nn.Module | None]


class BasicBlock(nn.Module):
    """3x3 conv -> norm -> act -> 3x3 conv -> norm [-> attention] (+ shortcut) -> act.

    ``k`` holds the family's knobs (``norm``, ``activation``, ``shortcut``).
    """

    expansion = 1

    def __init__(self, k: SimpleNamespace, dims: int, in_ch: int, ch: int, stride: int, attention: Attention) -> None:
        super().__init__()
        out_ch = ch * self.expansion
        self.body = nn.Sequential(
            conv_norm_act(dims, in_ch, ch, 3, stride=stride, norm=k.norm, activation=k.activation),
            conv_norm_act(dims, ch, out_ch, 3, norm=k.norm, activation=None),
        )
        gate = attention(out_ch)
        self.attention = gate if gate is not None else nn.Identity()
        self.shortcut = _shortcut(dims, in_ch, out_ch, stride, k.norm) if k.shortcut else None
        self.act = layers.activation(k.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.attention(self.body(x))  # (B, C', *S/stride)
        if self.shortcut is not None:
            h = h + self.shortcut(x)
        return self.act(h)


class Bottleneck(BasicBlock):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4) [-> attention] (+ shortcut) -> act."""

    expansion = 4

    def __init__(self, k: SimpleNamespace, dims: int, in_ch: int, ch: int, stride: int, attention: Attention) -> None:
        # The basic body built first is replaced; building it keeps the order in which seeded parameters are
        # drawn, so a seeded model keeps its numbers (tests/golden/models.json).
        super().__init__(k, dims, in_ch, ch, stride, attention)
        norm, act = k.norm, k.activation
        self.body = nn.Sequential(
            conv_norm_act(dims, in_ch, ch, 1, norm=norm, activation=act),
            conv_norm_act(dims, ch, ch, 3, stride=stride, norm=norm, activation=act),
            conv_norm_act(dims, ch, ch * self.expansion, 1, norm=norm, activation=None),
        )


def _shortcut(dims: int, in_ch: int, out_ch: int, stride: int, norm: str) -> nn.Module:
    """Identity when shapes match, else a strided 1x1 projection (ResNet's option B)."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return conv_norm_act(dims, in_ch, out_ch, 1, stride=stride, norm=norm, activation=None)


@register_model("resnet")
class ResNet(ConvClassifier, width=16, stages=3, depth=2, block="basic", shortcut=True):
    """Stem 3x3 conv -> ``stages`` stages of ``depth`` blocks (width doubles, stride 2 per stage) -> head.

    The defaults (3 stages x 2 basic blocks) are the CIFAR ResNet-14 shape.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, **knobs: Any) -> None:
        super().__init__(**knobs)
        k = self.knobs
        dims = spatial_dims(input_shape)
        block_cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[k.block]
        mods: list[nn.Module] = [conv_norm_act(dims, input_shape[0], k.width, 3, norm=k.norm, activation=k.activation)]
        in_ch = k.width
        for s in range(k.stages):
            for b in range(k.depth):
                stride = 2 if s > 0 and b == 0 else 1
                mods.append(block_cls(k, dims, in_ch, k.width * 2**s, stride, self.channel_attention))
                in_ch = k.width * 2**s * block_cls.expansion
        self.features = nn.Sequential(*mods)
        self.head = self.classifier(input_shape, num_classes)

    def channel_attention(self, channels: int) -> nn.Module | None:
        """The attention module inside each block of ``channels`` outputs: none in a plain ResNet."""
        return None
