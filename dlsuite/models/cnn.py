"""Plain convolution stack: the MNIST-1D paper's CNN, in 1D or 2D.

Paper recipe (the defaults, and the ``mnist1d_cnn`` preset): 3 conv layers of 25 channels, kernel 5
then 3, stride 2, padding 1, ReLU, then a linear head on the flattened features (94% test accuracy on
MNIST-1D).
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import register_model, register_preset
from dlsuite.models.common import ConvClassifier
from dlsuite.models.knobs import POOL, Knob


@register_model("cnn")
class ConvNet(ConvClassifier, width=25, depth=3, kernel_size=3, first_kernel_size=5, norm="none", head="flatten"):
    """``depth`` conv blocks (conv -> norm -> activation -> dropout [-> pool]) and a linear head."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        stride: Annotated[int, Knob("convolution stride", ge=1)] = 2,
        padding: Annotated[int, Knob("convolution zero padding", ge=0)] = 1,
        pool: Annotated[str, POOL.where(choices=("none", "max", "avg"))] = "none",
        **knobs: Any,
    ) -> None:
        super().__init__(**knobs)
        k = self.knobs
        dims = len(input_shape) - 1
        conv = layers.conv(dims)
        blocks: list[nn.Module] = []
        in_ch = input_shape[0]
        for i in range(k.depth):
            blocks += [
                conv(in_ch, k.width, k.first_kernel_size if i == 0 else k.kernel_size, stride=stride, padding=padding),
                layers.norm(k.norm, dims, k.width),
                layers.activation(k.activation),
            ]
            if k.dropout:
                blocks.append(nn.Dropout(k.dropout))
            if pool != "none":
                blocks.append(layers.pool(pool, dims))
            in_ch = k.width
        self.features = nn.Sequential(*blocks)
        with torch.no_grad():  # infer the head's input size from a dummy example
            out = self.features(torch.zeros(1, *input_shape))
        if k.head == "gap":
            self.head = nn.Sequential(layers.global_pool(dims), nn.Linear(k.width, num_classes))
        else:
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(out[0].numel(), num_classes))


mnist1d_cnn = register_preset(
    "mnist1d_cnn",
    "cnn",
    "The MNIST-1D paper's CNN, pinned: the ``cnn`` defaults may change, this name does not.",
    width=25,
    depth=3,
    kernel_size=3,
    first_kernel_size=5,
    stride=2,
    padding=1,
    norm="none",
    activation="relu",
    pool="none",
    head="flatten",
)
