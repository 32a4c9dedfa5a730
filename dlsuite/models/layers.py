"""Factories for the building blocks that knobs name: activations, normalisation, pooling, convs.

Models ask these factories instead of naming ``nn.ReLU`` etc. directly, so that ``activation``,
``norm`` and ``pool`` knobs work the same way in every family.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from dlsuite.errors import ConfigError
from dlsuite.registry import Registry

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activations", "non-linearities")
NORMS: Registry[Callable[[int, int], nn.Module]] = Registry("norms", "normalisation layers (batch, layer, none)")

for _name, _cls in {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
}.items():
    ACTIVATIONS.add(_name, _cls)


def activation(name: str) -> nn.Module:
    """A fresh activation module by name."""
    return ACTIVATIONS.get(name, what="activation")()


@NORMS.register("batch")
def _batch_norm(dims: int, channels: int) -> nn.Module:
    return {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dims](channels)


@NORMS.register("layer")
def _layer_norm(dims: int, channels: int) -> nn.Module:
    # Over features (dims=0) plain LayerNorm; over conv maps GroupNorm with one group normalises
    # each example across channels and positions, which is layer norm for convolutions.
    return nn.LayerNorm(channels) if dims == 0 else nn.GroupNorm(1, channels)


@NORMS.register("none")
def _no_norm(dims: int, channels: int) -> nn.Module:
    return nn.Identity()


def norm(name: str, dims: int, channels: int) -> nn.Module:
    """Normalisation for ``channels`` features; ``dims`` is 0 (vectors), 1 (sequences) or 2 (images)."""
    return NORMS.get(name, what="norm")(dims, channels)


def conv(dims: int) -> type[nn.Conv1d] | type[nn.Conv2d]:
    """``nn.Conv1d`` or ``nn.Conv2d`` for 1 or 2 spatial dimensions."""
    if dims not in (1, 2):
        raise ConfigError(f"convolutions need 1D or 2D inputs, got {dims} spatial dimensions")
    return nn.Conv1d if dims == 1 else nn.Conv2d


def pool(name: str, dims: int, kernel: int = 2) -> nn.Module:
    """Max or average pooling (``name`` ``max`` / ``avg``) with kernel = stride = ``kernel``."""
    table = {
        ("max", 1): nn.MaxPool1d,
        ("max", 2): nn.MaxPool2d,
        ("avg", 1): nn.AvgPool1d,
        ("avg", 2): nn.AvgPool2d,
    }
    if (name, dims) not in table:
        raise ConfigError(f"pool must be 'max' or 'avg', got {name!r}")
    return table[(name, dims)](kernel)


def global_pool(dims: int) -> nn.Module:
    """Global average pooling to one value per channel, then flatten."""
    return nn.Sequential(nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1), nn.Flatten())
