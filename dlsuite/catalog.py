"""Imports every module that declares a registry, so that ``dlsuite list`` sees every kind.

Each of these modules is light: lazy entries (``"module:attr"``) stand for what needs Lightning,
Optuna or torchvision, so listing names imports at most torch.
"""

from __future__ import annotations

import dlsuite.data
import dlsuite.data.augment
import dlsuite.hpo.samplers
import dlsuite.models
import dlsuite.models.layers
import dlsuite.tasks
import dlsuite.techniques.losses
import dlsuite.techniques.optim
import dlsuite.transfer  # noqa: F401  (backbones, strategies, the transfer model)
from dlsuite.errors import ConfigError, did_you_mean
from dlsuite.registry import REGISTRIES, Registry


def get_registry(kind: str) -> Registry:  # type: ignore[type-arg]
    """The registry of ``kind``, or a :class:`ConfigError` listing the kinds."""
    if kind not in REGISTRIES:
        raise ConfigError(f"unknown kind {kind!r}{did_you_mean(kind, REGISTRIES)}; valid: {', '.join(REGISTRIES)}")
    return REGISTRIES[kind]
