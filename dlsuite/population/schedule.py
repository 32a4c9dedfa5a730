"""Each member's learning rate at every step, from dlsuite's own schedule for its config.

Rather than re-deriving each schedule's formula, the table is read off the very schedulers a
sequential run uses (:func:`dlsuite.techniques.optim.create_scheduler`), stepped on a throwaway
optimiser as Lightning steps them: once per epoch, or once per batch for ``interval="step"``
(one-cycle). Row ``t`` is the rate each member trains with at step ``t``; divided by the base rates
it is the per-member multiplier. One-cycle also cycles the momentum (SGD's ``momentum``, Adam's
``beta1``): that is tabulated alongside.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from dlsuite.config import OptimConfig
from dlsuite.techniques.optim import create_scheduler

#: Schedules that need a monitored metric to step (they cannot be tabulated in advance).
METRIC_SCHEDULES = ("plateau",)


def _momentum(group: dict[str, Any]) -> float:
    return float(group["betas"][0]) if "betas" in group else float(group.get("momentum", 0.0))


def member_rates(optim: OptimConfig, epochs: int, steps: int) -> tuple[list[float], list[float]]:
    """The learning rate and the momentum (SGD) or ``beta1`` (Adam) at each of ``epochs * steps`` steps.

    Cached by value: stepping a scheduler costs about 0.1 ms a step (over 5 s for 200 epochs of 40 steps
    on the loaded 2-core CPU), and the members of a seeds population all share one optimiser config.
    """
    rates, moments = _member_rates(optim.model_dump_json(), epochs, steps)
    return list(rates), list(moments)


@functools.lru_cache(maxsize=32)
def _member_rates(optim_json: str, epochs: int, steps: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    optim = OptimConfig.model_validate_json(optim_json)
    if optim.schedule.name in METRIC_SCHEDULES:
        raise ValueError(f"schedule {optim.schedule.name!r} steps on a validation metric; it cannot be tabulated")
    probe = torch.zeros(1, requires_grad=True)
    opt: torch.optim.Optimizer
    if optim.name == "sgd":
        opt = torch.optim.SGD([probe], lr=optim.lr, momentum=optim.momentum)
    else:
        opt = torch.optim.Adam([probe], lr=optim.lr, betas=optim.betas)
    spec = create_scheduler(opt, optim.schedule, epochs, steps)
    sched, per_step = spec["scheduler"], spec["interval"] == "step"
    rates: list[float] = []
    moments: list[float] = []
    with warnings.catch_warnings():
        # The probe has no gradient: opt.step() only satisfies the "step the optimiser first" check.
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            for _ in range(steps):
                rates.append(float(opt.param_groups[0]["lr"]))
                moments.append(_momentum(opt.param_groups[0]))
                opt.step()
                if per_step and len(rates) < epochs * steps:
                    sched.step()
            if not per_step:
                sched.step()
    return tuple(rates), tuple(moments)


def rate_table(optims: Sequence[OptimConfig], epochs: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(epochs * steps, P)`` float64 tables: each member's learning rate and momentum/``beta1`` at step ``t``."""
    cols = [member_rates(o, epochs, steps) for o in optims]
    lr = torch.tensor([c[0] for c in cols], dtype=torch.float64).T.contiguous()
    moment = torch.tensor([c[1] for c in cols], dtype=torch.float64).T.contiguous()
    return lr, moment
