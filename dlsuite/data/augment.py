"""Augmentations of training batches by name (``data.augment``), applied on the device.

The data live on the training device as tensors (see :mod:`dlsuite.data.base`), so augmentations work on
whole batches there, drawing fresh random parameters for every example. torchvision's v2 transforms draw one
set of parameters per call, which on a batch tensor would move every example the same way; the per-example
versions below are a few batched tensor operations each (``grid_sample`` for rotation / scale, gathers for
crops and rolls), so they cost little next to a forward pass.

Inputs are the normalised tensors ``(B, C, L)`` for sequences or ``(B, C, H, W)`` for images. Zero fill (for
crop padding, rotation corners, erased patches) is therefore the training mean under ``normalize: standard``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from dlsuite.errors import ConfigError, refuse_unknown
from dlsuite.registry import Registry

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Augmentation:
    """A registered augmentation: ``build(**params) -> transform`` and the input kinds it fits."""

    build: Callable[..., Transform]
    dims: tuple[int, ...]
    """Spatial dimensions it applies to: 1 (sequences ``(C, L)``), 2 (images ``(C, H, W)``)."""


AUGMENTATIONS: Registry[Augmentation] = Registry("augmentations", "training-batch augmentations (data.augment)")
_KIND = {1: "sequences (C, L)", 2: "images (C, H, W)"}


def _register(name: str, dims: tuple[int, ...]) -> Callable[[Callable[..., Transform]], Callable[..., Transform]]:
    def deco(fn: Callable[..., Transform]) -> Callable[..., Transform]:
        AUGMENTATIONS.add(name, Augmentation(fn, dims))
        return fn

    return deco


def _chosen(x: torch.Tensor, p: float) -> torch.Tensor:
    """Per-example Bernoulli(p) mask shaped to broadcast over ``x``."""
    keep = torch.rand(x.shape[0], device=x.device) < p
    return keep.view(-1, *([1] * (x.dim() - 1)))


def _uniform(n: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(lo, hi)


# -- images ----------------------------------------------------------------------------------
@_register("random_crop", (2,))
def random_crop(padding: int = 4, p: float = 1.0) -> Transform:
    """Pad by ``padding`` (zeros) and crop back to the original size at a random offset per example."""
    if padding < 1:
        raise ValueError("padding must be >= 1")

    def tf(x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        xp = F.pad(x, (padding,) * 4).permute(0, 2, 3, 1)  # (B, H+2P, W+2P, C)
        oy = torch.randint(0, 2 * padding + 1, (b,), device=x.device)
        ox = torch.randint(0, 2 * padding + 1, (b,), device=x.device)
        rows = oy[:, None] + torch.arange(h, device=x.device)  # (B, H)
        cols = ox[:, None] + torch.arange(w, device=x.device)  # (B, W)
        idx = torch.arange(b, device=x.device)[:, None, None]
        out = xp[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, C, H, W)
        return torch.where(_chosen(x, p), out, x)

    return tf


@_register("hflip", (2,))
def hflip(p: float = 0.5) -> Transform:
    """Mirror images left-right with probability ``p``."""
    return lambda x: torch.where(_chosen(x, p), x.flip(-1), x)


def _affine(x: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Rotate by ``angle`` (radians) and zoom by ``scale`` about the centre, per example (bilinear, zero fill)."""
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@_register("rotation", (2,))
def rotation(degrees: float = 10.0, p: float = 1.0) -> Transform:
    """Rotate by an angle drawn uniformly from ``[-degrees, degrees]``."""

    def tf(x: torch.Tensor) -> torch.Tensor:
        angle = _uniform(x.shape[0], -degrees, degrees, x.device) * (math.pi / 180)
        return torch.where(_chosen(x, p), _affine(x, angle, torch.ones_like(angle)), x)

    return tf


@_register("scale", (2,))
def scale(min: float = 0.8, max: float = 1.2, p: float = 1.0) -> Transform:
    """Zoom by a factor drawn uniformly from ``[min, max]`` (below 1 shrinks, above 1 enlarges)."""
    if not 0 < min <= max:
        raise ValueError("need 0 < min <= max")

    def tf(x: torch.Tensor) -> torch.Tensor:
        s = _uniform(x.shape[0], min, max, x.device)
        return torch.where(_chosen(x, p), _affine(x, torch.zeros_like(s), s), x)

    return tf


@_register("color_jitter", (2,))
def color_jitter(brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, p: float = 1.0) -> Transform:
    """Scale brightness, contrast and (colour images) saturation by factors in ``[1 - v, 1 + v]`` per example.

    On normalised inputs brightness scales each pixel's value, contrast its distance from the image mean and
    saturation its distance from the grey value (luma weights 0.299 / 0.587 / 0.114).
    """

    def tf(x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        shape = (b, 1, 1, 1)
        out = x * _uniform(b, 1 - brightness, 1 + brightness, x.device).view(shape)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * _uniform(b, 1 - contrast, 1 + contrast, x.device).view(shape) + mean
        if x.shape[1] == 3 and saturation > 0:
            w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            grey = (out * w).sum(1, keepdim=True)
            out = (out - grey) * _uniform(b, 1 - saturation, 1 + saturation, x.device).view(shape) + grey
        return torch.where(_chosen(x, p), out, x)

    return tf


@_register("random_erasing", (1, 2))
def random_erasing(
    p: float = 0.5, scale: Sequence[float] = (0.02, 0.33), ratio: Sequence[float] = (0.3, 3.3), value: float = 0.0
) -> Transform:
    """Erase a random rectangle (an interval for sequences) covering ``scale`` of the area, aspect ``ratio``."""
    lo, hi = float(scale[0]), float(scale[1])
    r_lo, r_hi = math.log(ratio[0]), math.log(ratio[1])

    def tf(x: torch.Tensor) -> torch.Tensor:
        b, dev = x.shape[0], x.device
        area = _uniform(b, lo, hi, dev)
        if x.dim() == 3:  # sequences: an interval
            n = x.shape[-1]
            length = (area * n).round().clamp(1, n)
            start = (torch.rand(b, device=dev) * (n - length + 1)).floor()
            pos = torch.arange(n, device=dev)
            mask = (pos >= start[:, None]) & (pos < (start + length)[:, None])  # (B, L)
            mask = mask[:, None, :]
        else:
            h, w = x.shape[-2:]
            r = torch.exp(_uniform(b, r_lo, r_hi, dev))
            eh = (torch.sqrt(area * h * w * r)).round().clamp(1, h)
            ew = (torch.sqrt(area * h * w / r)).round().clamp(1, w)
            top = (torch.rand(b, device=dev) * (h - eh + 1)).floor()
            left = (torch.rand(b, device=dev) * (w - ew + 1)).floor()
            ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
            in_y = (ys >= top[:, None]) & (ys < (top + eh)[:, None])  # (B, H)
            in_x = (xs >= left[:, None]) & (xs < (left + ew)[:, None])  # (B, W)
            mask = (in_y[:, :, None] & in_x[:, None, :])[:, None]  # (B, 1, H, W)
        mask = mask & _chosen(x, p)
        return torch.where(mask, torch.full_like(x, value), x)

    return tf


# -- sequences -------------------------------------------------------------------------------
@_register("roll", (1,))
def roll(max_shift: int = 5, circular: bool = True, p: float = 1.0) -> Transform:
    """Shift each sequence by a random ``[-max_shift, max_shift]`` steps: wrapped round (``circular``) or
    translated with zero fill."""

    def tf(x: torch.Tensor) -> torch.Tensor:
        b, _, n = x.shape
        shift = torch.randint(-max_shift, max_shift + 1, (b, 1), device=x.device)
        src = torch.arange(n, device=x.device)[None, :] - shift  # (B, L): where each output step reads from
        out = x.gather(2, (src % n)[:, None, :].expand_as(x))
        if not circular:
            out = out * ((src >= 0) & (src < n))[:, None, :]
        return torch.where(_chosen(x, p), out, x)

    return tf


@_register("gaussian_noise", (1, 2))
def gaussian_noise(std: float = 0.1, p: float = 1.0) -> Transform:
    """Add independent Gaussian noise of standard deviation ``std`` (in normalised units)."""
    return lambda x: torch.where(_chosen(x, p), x + std * torch.randn_like(x), x)


@_register("amplitude_scale", (1, 2))
def amplitude_scale(min: float = 0.8, max: float = 1.2, p: float = 1.0) -> Transform:
    """Multiply each example by a factor drawn uniformly from ``[min, max]``."""

    def tf(x: torch.Tensor) -> torch.Tensor:
        f = _uniform(x.shape[0], min, max, x.device).view(-1, *([1] * (x.dim() - 1)))
        return torch.where(_chosen(x, p), x * f, x)

    return tf


# -- building --------------------------------------------------------------------------------
def augmentation_params(name: str) -> dict[str, Any]:
    """The parameters an augmentation takes, with their defaults."""
    sig = inspect.signature(AUGMENTATIONS.get(name, what="augmentation").build)
    return {p.name: p.default for p in sig.parameters.values()}


def check_augmentation(name: str, params: dict[str, Any]) -> None:
    """Refuse an unknown augmentation or a parameter it does not take."""
    refuse_unknown(params, augmentation_params(name), f"augmentation {name!r}")


class Augmenter:
    """The configured augmentations in order, checked against the shape of one example.

    Args:
        specs: ``(name, params)`` pairs, as in ``data.augment``.
        input_shape: one example's shape ``(C, L)`` or ``(C, H, W)``.
    """

    def __init__(self, specs: Sequence[tuple[str, dict[str, Any]]], input_shape: Sequence[int]) -> None:
        dims = len(input_shape) - 1
        self.names = [name for name, _ in specs]
        self.transforms: list[Transform] = []
        for name, params in specs:
            check_augmentation(name, params)
            aug = AUGMENTATIONS.get(name, what="augmentation")
            if dims not in aug.dims:
                fits = " or ".join(_KIND[d] for d in aug.dims)
                raise ConfigError(
                    f"augmentation {name!r} applies to {fits}; this dataset's examples have shape {tuple(input_shape)}"
                )
            try:
                self.transforms.append(aug.build(**params))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"augmentation {name!r} with {params}: {exc}") from None

    def __bool__(self) -> bool:
        return bool(self.transforms)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Augment a training batch (a new tensor; the input is left as it is)."""
        for tf in self.transforms:
            x = tf(x)
        return x
