"""The model registry in the spirit of timm: ``@register_model``, ``create_model``, ``list_models``.

A model builder is a function ``(input_shape, num_classes, *, knob=default, ...) -> nn.Module``.
``input_shape`` excludes the batch dimension: ``(C, L)`` for sequences, ``(C, H, W)`` for images.
Knobs a builder does not take are refused with the list of those it does take.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from dlsuite.errors import ConfigError, did_you_mean
from dlsuite.registry import Registry

ModelBuilder = Callable[..., nn.Module]

MODELS: Registry[ModelBuilder] = Registry("models", "architectures (plain nn.Modules)")
_POSITIONAL = ("input_shape", "num_classes")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a model builder under ``name``; duplicate names are refused."""
    return MODELS.register(name)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern (``"res*"``)."""
    return MODELS.names(pattern)


def model_knobs(name: str) -> dict[str, Any]:
    """The knobs a model takes, with their defaults."""
    sig = inspect.signature(MODELS.get(name, what="model"))
    return {
        p.name: p.default for p in sig.parameters.values() if p.name not in _POSITIONAL and p.kind is not p.VAR_KEYWORD
    }


def check_knobs(name: str, knobs: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for knobs that model ``name`` does not take."""
    valid = model_knobs(name)
    for knob, value in knobs.items():
        if value is not None and knob not in valid:  # None knobs are dropped, as in timm
            raise ConfigError(
                f"model {name!r} does not take knob {knob!r}{did_you_mean(knob, valid)}; "
                f"it takes: {', '.join(valid) or '(none)'}"
            )


def create_model(name: str, input_shape: tuple[int, ...], num_classes: int, **knobs: Any) -> nn.Module:
    """Build a registered model; ``None`` knobs are dropped so one config fits many models."""
    knobs = {k: v for k, v in knobs.items() if v is not None}
    check_knobs(name, knobs)
    try:
        return MODELS.get(name, what="model")(tuple(input_shape), num_classes, **knobs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model {name!r} cannot be built with {knobs}: {exc}") from None


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those that require gradients)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
