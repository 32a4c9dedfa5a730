"""Each member's learning rate at every step, from dlsuite's own schedule for its config.

Rather than re-deriving each schedule's formula, the table is read off the very schedulers a
sequential run uses (:func:`dlsuite.techniques.optim.create_scheduler`), stepped on a throwaway
optimiser as Lightning steps them: once per epoch, or once per batch for ``interval="step"``
(one-cycle). Row ``t`` is the rate each member trains with at step ``t``; divided by the base rates
it is the per-member multiplier.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from dlsuite.config import OptimConfig
from dlsuite.techniques.optim import create_scheduler

#: Schedules that need a monitored metric to step (they cannot be tabulated in advance).
METRIC_SCHEDULES = ("plateau",)


def member_rates(optim: OptimConfig, epochs: int, steps: int) -> list[float]:
    """The learning rate at each of ``epochs * steps`` steps of one run with ``optim``."""
    if optim.schedule.name in METRIC_SCHEDULES:
        raise ValueError(f"schedule {optim.schedule.name!r} steps on a validation metric; it cannot be tabulated")
    probe = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([probe], lr=optim.lr)
    spec = create_scheduler(opt, optim.schedule, epochs, steps)
    sched, per_step = spec["scheduler"], spec["interval"] == "step"
    rates: list[float] = []
    with warnings.catch_warnings():
        # The probe has no gradient: opt.step() only satisfies the "step the optimiser first" check.
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            for _ in range(steps):
                rates.append(float(opt.param_groups[0]["lr"]))
                opt.step()
                if per_step and len(rates) < epochs * steps:
                    sched.step()
            if not per_step:
                sched.step()
    return rates


def rate_table(optims: Sequence[OptimConfig], epochs: int, steps: int) -> torch.Tensor:
    """``(epochs * steps, P)`` float64: member ``i``'s learning rate at step ``t``."""
    return torch.tensor([member_rates(o, epochs, steps) for o in optims], dtype=torch.float64).T.contiguous()
