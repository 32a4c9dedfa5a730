"""A small Transformer encoder classifier (ViT-style for images, patch tokens for sequences).

The input is cut into non-overlapping patches (``patch`` steps of a sequence, ``patch`` x ``patch``
pixels of an image), each embedded linearly (a strided convolution) to ``width`` features, given a
learned position embedding, and passed through ``depth`` pre-norm encoder layers of ``heads``-head
self-attention and an MLP. The head reads a learned ``cls`` token or the mean of all tokens (``gap``).
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import register_model
from dlsuite.models.common import spatial_dims
from dlsuite.models.knobs import HEAD, Activation, Depth, Dropout, Knob, Width


@register_model("transformer")
class TransformerClassifier(nn.Module):
    """patch embedding + positions [+ cls token] -> ``depth`` encoder layers -> layer norm -> linear.

    ``width`` must be divisible by ``heads``, and ``patch`` must divide the input's spatial sizes.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        width: Width = 64,
        depth: Depth = 2,
        heads: Annotated[int, Knob("attention heads", ge=1, divides="width")] = 4,
        mlp_ratio: Annotated[float, Knob("MLP width relative to the token width", gt=0)] = 2.0,
        patch: Annotated[int, Knob("patch size in steps (or pixels per side)", ge=1)] = 4,
        dropout: Dropout = 0.0,
        activation: Activation = "gelu",
        head: Annotated[str, HEAD.where(choices=("cls", "gap"))] = "cls",
    ) -> None:
        super().__init__()
        dims = spatial_dims(input_shape)
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        if any(s % patch for s in input_shape[1:]):
            raise ValueError(f"patch={patch} must divide the input's spatial sizes {tuple(input_shape[1:])}")
        self.embed = layers.conv(dims)(input_shape[0], width, patch, stride=patch)
        tokens = math.prod(s // patch for s in input_shape[1:])
        self.cls = nn.Parameter(torch.zeros(1, 1, width)) if head == "cls" else None
        self.pos = nn.Parameter(torch.randn(1, tokens + (head == "cls"), width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            int(width * mlp_ratio),
            dropout,
            activation=layers.activation(activation),
            batch_first=True,
            norm_first=True,  # pre-norm: trains without warmup at small scale
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)  # (B, tokens, width)
        if self.cls is not None:
            t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1)  # (B, 1 + tokens, width)
        t = self.norm(self.encoder(t + self.pos))
        z = t[:, 0] if self.cls is not None else t.mean(1)  # (B, width)
        return self.head(z)  # (B, classes)
