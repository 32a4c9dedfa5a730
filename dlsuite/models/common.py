"""Small pieces the conv families share: input-form checks, conv-norm-activation, the classifier head,
and their base class :class:`ConvClassifier` (features -> head).

Kept apart from ``layers.py`` (the knob factories) because these are composite blocks, not knob
values; every family file stays readable on its own by importing only these few helpers.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from dlsuite.models import layers
from dlsuite.models.api import Family


def spatial_dims(input_shape: tuple[int, ...]) -> int:
    """1 for ``(C, L)`` sequences, 2 for ``(C, H, W)`` images; ValueError otherwise."""
    if len(input_shape) not in (2, 3):
        raise ValueError(f"expected (C, L) or (C, H, W) inputs, got shape {tuple(input_shape)}")
    return len(input_shape) - 1


def check_choice(knob: str, value: object, choices: Iterable[str]) -> None:
    """ValueError naming the allowed values when ``value`` is not one of ``choices``."""
    allowed = list(choices)
    if value not in allowed:
        raise ValueError(f"{knob} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def conv_norm_act(
    dims: int,
    in_ch: int,
    out_ch: int,
    kernel: int,
    *,
    stride: int = 1,
    groups: int = 1,
    norm: str = "batch",
    activation: str | None = "relu",
) -> nn.Sequential:
    """Conv ("same" padding for odd kernels) -> norm -> activation; no conv bias when a norm follows."""
    conv = layers.conv(dims)(
        in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=norm == "none"
    )
    mods: list[nn.Module] = [conv, layers.norm(norm, dims, out_ch)]
    if activation is not None:
        mods.append(layers.activation(activation))
    return nn.Sequential(*mods)


@torch.no_grad()
def output_shape(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of ``module``'s output for one example (batch dimension dropped), by a dummy forward."""
    was_training = module.training
    module.eval()  # batch-norm statistics stay untouched, and a batch of one is allowed
    try:
        out = module(torch.zeros(2, *input_shape))
    finally:
        module.train(was_training)
    return tuple(out.shape[1:])


def can_pool(shape: tuple[int, ...], kernel: int = 2) -> bool:
    """Whether a ``kernel`` pooling still fits every spatial size of a ``(C, *spatial)`` map.

    Small inputs (8x8 digits, 40-step sequences) run out of resolution before deep stacks end; the
    families skip pools that would shrink a map below one cell instead of failing.
    """
    return all(s >= kernel for s in shape[1:])


class ClassifierHead(nn.Module):
    """Classifier head: ``gap`` (global average pool -> linear) or ``flatten`` (flatten -> linear).

    ``hidden`` > 0 inserts fully connected hidden layers (AlexNet / VGG style), each followed by the
    activation and dropout.
    """

    def __init__(
        self,
        kind: str,
        feature_shape: tuple[int, ...],
        num_classes: int,
        *,
        dropout: float = 0.0,
        hidden: tuple[int, ...] = (),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_choice("head", kind, ("gap", "flatten"))
        dims = len(feature_shape) - 1
        mods: list[nn.Module] = []
        if kind == "gap":
            mods.append(layers.global_pool(dims))
            width = feature_shape[0]
        else:
            mods.append(nn.Flatten())
            width = int(torch.Size(feature_shape).numel())
        for h in hidden:
            mods += [nn.Dropout(dropout), nn.Linear(width, h), layers.activation(activation)]
            width = h
        mods += [nn.Dropout(dropout), nn.Linear(width, num_classes)]
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, *spatial) -> (B, classes)


class ConvClassifier(Family, dropout=0.0, norm="batch", activation="relu", head="gap"):
    """A conv family: ``features`` (built by the family's ``__init__``), then a :class:`ClassifierHead`.

    Every conv family takes ``dropout``, ``norm``, ``activation`` and ``head``, with these defaults
    unless its class line sets others (``class LeNet(ConvClassifier, ..., activation="tanh")``).
    """

    features: nn.Module
    head: nn.Module

    def classifier(
        self, input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (), dropout: float | None = None
    ) -> ClassifierHead:
        """The head on ``features``' output: ``head`` kind, ``activation``, and ``dropout`` unless given."""
        k = self.knobs
        feat = output_shape(self.features, input_shape)
        drop = k.dropout if dropout is None else dropout
        return ClassifierHead(k.head, feat, num_classes, dropout=drop, hidden=hidden, activation=k.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, C, *S) -> (B, C', *S') -> (B, classes)
