"""Plain convolution stack: the MNIST-1D paper's CNN, in 1D or 2D.

Paper recipe: 3 conv layers of 25 channels, kernel 5 then 3, stride 2, padding 1, ReLU, then a
linear head on the flattened features (94% test accuracy on MNIST-1D).
"""

from __future__ import annotations

import torch
from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import register_model


class ConvNet(nn.Module):
    """``depth`` conv blocks (conv -> norm -> activation -> dropout [-> pool]) and a linear head."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        channels: int,
        depth: int,
        kernel_size: int,
        first_kernel_size: int,
        stride: int,
        padding: int,
        dropout: float,
        norm: str,
        activation: str,
        pool: str,
        head: str,
    ) -> None:
        super().__init__()
        dims = len(input_shape) - 1
        conv = layers.conv(dims)
        blocks: list[nn.Module] = []
        in_ch = input_shape[0]
        for i in range(depth):
            k = first_kernel_size if i == 0 else kernel_size
            blocks += [
                conv(in_ch, channels, k, stride=stride, padding=padding),
                layers.norm(norm, dims, channels),
                layers.activation(activation),
            ]
            if dropout:
                blocks.append(nn.Dropout(dropout))
            if pool != "none":
                blocks.append(layers.pool(pool, dims))
            in_ch = channels
        self.features = nn.Sequential(*blocks)
        with torch.no_grad():  # infer the head's input size from a dummy example
            out = self.features(torch.zeros(1, *input_shape))
        if head == "gap":
            self.head = nn.Sequential(layers.global_pool(dims), nn.Linear(channels, num_classes))
        else:
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(out[0].numel(), num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)  # (B, C, L') or (B, C, H', W')
        return self.head(h)  # (B, classes)


@register_model("cnn")
def cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    channels: int = 25,
    depth: int = 3,
    kernel_size: int = 3,
    first_kernel_size: int = 5,
    stride: int = 2,
    padding: int = 1,
    dropout: float = 0.0,
    norm: str = "none",
    activation: str = "relu",
    pool: str = "none",
    head: str = "flatten",
) -> nn.Module:
    """The MNIST-1D paper's CNN, generalised: 1D for ``(C, L)`` inputs, 2D for ``(C, H, W)``."""
    if head not in ("flatten", "gap"):
        raise ValueError("head must be 'flatten' or 'gap'")
    if pool not in ("none", "max", "avg"):
        raise ValueError("pool must be 'none', 'max' or 'avg'")
    if not 0.0 <= dropout < 1.0 or channels < 1 or depth < 1:
        raise ValueError("need channels >= 1, depth >= 1, 0 <= dropout < 1")
    return ConvNet(
        input_shape,
        num_classes,
        channels,
        depth,
        kernel_size,
        first_kernel_size,
        stride,
        padding,
        dropout,
        norm,
        activation,
        pool,
        head,
    )
