"""A small Transformer encoder classifier (ViT-style for images, patch tokens for sequences).

The input is cut into non-overlapping patches (``patch`` steps of a sequence, ``patch`` x ``patch``
pixels of an image), each embedded linearly (a strided convolution) to ``width`` features, given a
learned position embedding, and passed through ``depth`` pre-norm encoder layers of ``heads``-head
self-attention and an MLP. The head reads a learned ``cls`` token or the mean of all tokens (``gap``).
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import Family, register_model
from dlsuite.models.common import spatial_dims
from dlsuite.models.knobs import HEAD, Knob


@register_model("transformer")
class TransformerClassifier(Family, width=64, depth=2, dropout=0.0, activation="gelu"):
    """patch embedding + positions [+ cls token] -> ``depth`` encoder layers -> layer norm -> linear.

    ``width`` must be divisible by ``heads``, and ``patch`` must divide the input's spatial sizes.
    """

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        *,
        heads: Annotated[int, Knob("attention heads", ge=1, divides="width")] = 4,
        mlp_ratio: Annotated[float, Knob("MLP width relative to the token width", gt=0)] = 2.0,
        patch: Annotated[int, Knob("patch size in steps (or pixels per side)", ge=1)] = 4,
        head: Annotated[str, HEAD.where(choices=("cls", "gap"))] = "cls",
        **knobs: Any,
    ) -> None:
        super().__init__(**knobs)
        k = self.knobs
        dims = spatial_dims(input_shape)
        if k.width % heads:
            raise ValueError(f"width ({k.width}) must be divisible by heads ({heads})")
        if any(s % patch for s in input_shape[1:]):
            raise ValueError(f"patch={patch} must divide the input's spatial sizes {tuple(input_shape[1:])}")
        self.embed = layers.conv(dims)(input_shape[0], k.width, patch, stride=patch)
        tokens = math.prod(s // patch for s in input_shape[1:])
        self.cls = nn.Parameter(torch.zeros(1, 1, k.width)) if head == "cls" else None
        self.pos = nn.Parameter(torch.randn(1, tokens + (head == "cls"), k.width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            k.width,
            heads,
            int(k.width * mlp_ratio),
            k.dropout,
            activation=layers.activation(k.activation),
            batch_first=True,
            norm_first=True,  # pre-norm: trains without warmup at small scale
        )
        self.encoder = nn.TransformerEncoder(layer, k.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(k.width)
        self.head = nn.Linear(k.width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)  # (B, tokens, width)
        if self.cls is not None:
            t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1)  # (B, 1 + tokens, width)
        t = self.norm(self.encoder(t + self.pos))
        z = t[:, 0] if self.cls is not None else t.mean(1)  # (B, width)
        return self.head(z)  # (B, classes)
