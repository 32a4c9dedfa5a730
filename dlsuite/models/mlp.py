"""Multi-layer perceptron: flatten, ``depth`` hidden layers of ``width`` units, linear head.

Presets: ``linear`` (no hidden layer: logistic regression, the MNIST-1D paper's 32%) and
``mnist1d_mlp`` (the paper's 2 hidden layers of 100 ReLUs, 68%).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import Family, register_model, register_preset
from dlsuite.models.knobs import DEPTH

MlpDepth = Annotated[int, DEPTH.where(ge=0)]  # 0: no hidden layer (logistic regression)


@register_model("mlp")
class MLP(Family, width=100, shortcut=False, dropout=0.0, norm="none", activation="relu"):
    """Fully connected network; optional shortcut connections (same width, so shapes match)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, *, depth: MlpDepth = 2, **knobs: Any) -> None:
        super().__init__(**knobs)
        k = self.knobs
        width = k.width
        in_features = math.prod(input_shape)
        self.shortcut = k.shortcut
        self.stem = nn.Flatten()
        blocks = []
        for i in range(depth):
            blocks.append(
                nn.Sequential(
                    nn.Linear(in_features if i == 0 else width, width),
                    layers.norm(k.norm, 0, width),
                    layers.activation(k.activation),
                    nn.Dropout(k.dropout),
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(width if depth else in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)  # (B, features)
        for i, block in enumerate(self.blocks):
            # The first block changes the width, so it cannot have a shortcut.
            h = h + block(h) if self.shortcut and i > 0 else block(h)  # (B, width)
        return self.head(h)  # (B, classes)


linear = register_preset(
    "linear", "mlp", "Logistic regression: one linear layer on the flattened input (MNIST-1D paper: 32%).", depth=0
)
mnist1d_mlp = register_preset(
    "mnist1d_mlp", "mlp", "The MNIST-1D paper's MLP: 2 hidden layers of 100 ReLUs (68%).", width=100, depth=2
)
