"""Imports every module that registers names, and checks a config's names against them.

``dlsuite list KIND`` and config validation import this module so that every registry is full.
Later capabilities register their kinds by adding their module to the import list below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dlsuite.data
import dlsuite.data.augment
import dlsuite.hpo.samplers
import dlsuite.models
import dlsuite.models.layers
import dlsuite.tasks
import dlsuite.train.losses
import dlsuite.train.optim  # noqa: F401
from dlsuite import transfer  # noqa: F401  (registers backbones, strategies, the transfer model)

if TYPE_CHECKING:
    from dlsuite.config import RunConfig


def check_names(cfg: RunConfig) -> None:
    """Raise ConfigError for any name or option in ``cfg`` that no registry knows."""
    from dlsuite.data import DATASETS
    from dlsuite.data.base import check_args
    from dlsuite.models.api import check_knobs
    from dlsuite.models.init import INITS
    from dlsuite.tasks import TASKS
    from dlsuite.train.losses import LOSSES
    from dlsuite.train.optim import SCHEDULERS, optimizer_kwargs

    check_args(cfg.data.name, DATASETS.get(cfg.data.name, what="dataset"), cfg.data.args)
    check_knobs(cfg.model.name, cfg.model.knobs)
    INITS.get(cfg.model.init, what="init")
    TASKS.get(cfg.task.name, what="task")
    LOSSES.get(cfg.task.loss, what="loss")
    optimizer_kwargs(cfg.optim)
    SCHEDULERS.get(cfg.optim.schedule.name, what="schedule")
    from dlsuite.transfer import check_transfer_config

    check_transfer_config(cfg)
    from dlsuite.train.techniques import check_techniques

    check_techniques(cfg)
