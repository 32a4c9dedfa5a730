"""Multi-layer perceptron: flatten, ``depth`` hidden layers of ``width`` units, linear head."""

from __future__ import annotations

import math

import torch
from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import register_model


class MLP(nn.Module):
    """Fully connected network; optional residual hidden layers (same width, so shapes match)."""

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        width: int,
        depth: int,
        dropout: float,
        norm: str,
        activation: str,
        residual: bool,
    ) -> None:
        super().__init__()
        self.residual = residual
        self.stem = nn.Flatten()
        blocks = []
        for i in range(depth):
            blocks.append(
                nn.Sequential(
                    nn.Linear(in_features if i == 0 else width, width),
                    layers.norm(norm, 0, width),
                    layers.activation(activation),
                    nn.Dropout(dropout),
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(width if depth else in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)  # (B, features)
        for i, block in enumerate(self.blocks):
            # The first block changes the width, so it cannot be residual.
            h = h + block(h) if self.residual and i > 0 else block(h)
        return self.head(h)  # (B, classes)


@register_model("mlp")
def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 100,
    depth: int = 2,
    dropout: float = 0.0,
    norm: str = "none",
    activation: str = "relu",
    residual: bool = False,
) -> nn.Module:
    """MLP on the flattened input. MNIST-1D paper: 2 hidden layers of 100 ReLUs (68% test accuracy)."""
    if width < 1 or depth < 0 or not 0.0 <= dropout < 1.0:
        raise ValueError("need width >= 1, depth >= 0, 0 <= dropout < 1")
    return MLP(math.prod(input_shape), num_classes, width, depth, dropout, norm, activation, residual)


@register_model("linear")
def linear(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Logistic regression: one linear layer on the flattened input (MNIST-1D paper: 32%)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))
