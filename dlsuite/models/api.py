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

#: Input forms a model can take: ``1d`` sequences ``(C, L)``, ``2d`` images ``(C, H, W)``, ``tokens``
#: integer sequences ``(L,)``. Tests are generated from this table (every model x every form).
INPUT_FORMS = {"1d": 2, "2d": 3, "tokens": 1}
_MODEL_INPUTS: dict[str, tuple[str, ...]] = {}


def register_model(name: str, inputs: tuple[str, ...] = ("1d", "2d")) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a model builder under ``name`` taking the input forms ``inputs``; duplicates are refused."""
    unknown = set(inputs) - set(INPUT_FORMS)
    if unknown:
        raise ValueError(f"unknown input forms {sorted(unknown)}; valid: {', '.join(INPUT_FORMS)}")
    _MODEL_INPUTS.setdefault(name, tuple(inputs))
    return MODELS.register(name)


def model_inputs(name: str) -> tuple[str, ...]:
    """The input forms (``1d``, ``2d``, ``tokens``) that model ``name`` takes."""
    MODELS.get(name, what="model")
    return _MODEL_INPUTS.get(name, ("1d", "2d"))


def _check_input(name: str, input_shape: tuple[int, ...]) -> None:
    forms = model_inputs(name)
    if "tokens" in forms and len(input_shape) == 1:
        return
    if any(INPUT_FORMS[f] == len(input_shape) and f != "tokens" for f in forms):
        return
    shapes = {"1d": "(C, L) sequences", "2d": "(C, H, W) images", "tokens": "(L,) token sequences"}
    raise ConfigError(
        f"model {name!r} takes {' or '.join(shapes[f] for f in forms)}; the data gives examples of shape "
        f"{tuple(input_shape)}"
    )


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
    _check_input(name, tuple(input_shape))
    try:
        return MODELS.get(name, what="model")(tuple(input_shape), num_classes, **knobs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model {name!r} cannot be built with {knobs}: {exc}") from None


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those that require gradients)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
