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
import dlsuite.train.losses
import dlsuite.train.optim
import dlsuite.transfer  # noqa: F401  (backbones, strategies, the transfer model)
