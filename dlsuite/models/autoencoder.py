"""Convolutional autoencoder (optionally variational), 1D or 2D, for the ``reconstruction`` task.

Encoder: ``depth`` stride-2 conv blocks (width doubling) -> flatten -> linear to a ``latent`` code.
Decoder: linear -> the mirror image, upsampling by transposed convolution (``upsample: transpose``)
or nearest-neighbour resize + conv (``nearest``, free of checkerboard artefacts) back to the exact
input size, then a conv to the input's channels with no activation (targets are normalised data).
``variational: true`` makes the code a Gaussian (mu, log-variance), sampled with the
reparameterisation trick in training and taken at its mean in evaluation (Kingma & Welling, 2013).

``forward`` returns ``(reconstruction, kl)``: the KL divergence to N(0, I) per example averaged over
the batch (0 for the plain autoencoder). ``num_classes`` is not used.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from torch import nn
from torch.nn import functional as F

from dlsuite.models import layers
from dlsuite.models.api import Family, register_model
from dlsuite.models.common import conv_norm_act, spatial_dims
from dlsuite.models.knobs import Knob


class UpBlock(nn.Module):
    """Upsample to an exact size (transposed conv, or resize + conv) -> norm -> act."""

    def __init__(self, dims: int, in_ch: int, out_ch: int, size: tuple[int, ...], mode: str, norm: str, act: str):
        super().__init__()
        self.size = list(size)
        self.mode = mode
        if mode == "transpose":
            tconv = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
            self.conv: nn.Module = tconv(in_ch, out_ch, 3, stride=2, padding=1, bias=norm == "none")
        else:
            self.conv = layers.conv(dims)(in_ch, out_ch, 3, padding=1, bias=norm == "none")
        self.post = nn.Sequential(layers.norm(norm, dims, out_ch), layers.activation(act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "transpose":
            # output_size picks the output padding that restores odd sizes exactly (7 -> 14 vs 7 -> 13 -> ...)
            h = self.conv(x, output_size=self.size)
        else:
            h = self.conv(F.interpolate(x, size=self.size, mode="nearest"))
        return self.post(h)


@register_model("autoencoder")
class ConvAutoencoder(Family, width=16, depth=2, norm="batch", activation="relu"):
    """Encoder convs -> latent (or mu/logvar) -> decoder up-blocks -> output conv."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,  # unused: the reconstruction task has no classes
        *,
        latent: Annotated[int, Knob("size of the code between encoder and decoder", ge=1)] = 16,
        variational: Annotated[bool, Knob("a Gaussian code (VAE) instead of a point")] = False,
        upsample: Annotated[str, Knob("decoder upsampling", choices=("transpose", "nearest"))] = "transpose",
        **knobs: Any,
    ) -> None:
        super().__init__(**knobs)
        k = self.knobs
        dims = spatial_dims(input_shape)
        self.variational = variational
        enc: list[nn.Module] = []
        sizes = [tuple(input_shape[1:])]
        in_ch = input_shape[0]
        for i in range(k.depth):
            out_ch = k.width * 2**i
            enc.append(conv_norm_act(dims, in_ch, out_ch, 3, stride=2, norm=k.norm, activation=k.activation))
            sizes.append(tuple((s + 2 - 3) // 2 + 1 for s in sizes[-1]))  # (N + 2P - F) / S + 1
            in_ch = out_ch
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.code_shape = (in_ch, *sizes[-1])
        flat = math.prod(self.code_shape)
        self.to_latent = nn.Linear(flat, 2 * latent if variational else latent)
        self.from_latent = nn.Linear(latent, flat)
        dec: list[nn.Module] = []
        for i in reversed(range(k.depth)):
            out_ch = k.width * 2 ** max(i - 1, 0)
            dec.append(UpBlock(dims, in_ch, out_ch, sizes[i], upsample, k.norm, k.activation))
            in_ch = out_ch
        self.decoder = nn.Sequential(*dec)
        self.out = layers.conv(dims)(in_ch, input_shape[0], 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = self.to_latent(self.encoder(x))  # (B, latent) or (B, 2 * latent)
        kl = x.new_zeros(())
        if self.variational:
            mu, logvar = code.chunk(2, dim=-1)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
            kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1).mean()
        else:
            z = code
        h = self.from_latent(z).view(len(x), *self.code_shape)  # (B, C', *S')
        return self.out(self.decoder(h)), kl  # (B, C, *S), scalar
