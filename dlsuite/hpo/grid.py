"""The grid sampler dlsuite's ask-and-tell workers use (``sampler: grid``)."""

from __future__ import annotations

from typing import Any

import optuna


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler without its ``study.stop()`` at exhaustion.

    Optuna stops the study when the grid is exhausted, which only works inside ``study.optimize``;
    dlsuite's workers ask and tell themselves and check ``is_exhausted`` before asking.
    """

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None
