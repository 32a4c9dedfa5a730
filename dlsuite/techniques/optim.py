"""Optimisers and learning-rate schedules built from the ``optim`` config section, by name.

Weight decay is applied to weights only: biases and normalisation parameters (every tensor of fewer
than two dimensions) go in a group without decay unless ``optim.decay_norm_and_bias`` is set, as in
nanoGPT and timm, since decaying them only hurts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler as sched

from dlsuite.config import OptimConfig, RunConfig, ScheduleConfig
from dlsuite.errors import ConfigError, refuse_unknown
from dlsuite.models.hooks import HasParamGroups
from dlsuite.registry import Registry

OPTIMIZERS: Registry[type[torch.optim.Optimizer]] = Registry("optimizers", "torch.optim optimisers")
for _name, _cls in {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
    "rmsprop": torch.optim.RMSprop,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adamax": torch.optim.Adamax,
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "lbfgs": torch.optim.LBFGS,
}.items():
    OPTIMIZERS.add(_name, _cls)


def _accepts(cls: type, name: str) -> bool:
    return name in inspect.signature(cls).parameters


def optimizer_kwargs(cfg: OptimConfig) -> dict[str, Any]:
    """Keyword arguments for ``cfg.name``'s constructor; options it does not take are refused."""
    cls = OPTIMIZERS.get(cfg.name, what="optimizer")
    kw: dict[str, Any] = {"lr": cfg.lr}
    defaults = OptimConfig.model_fields
    for key in ("weight_decay", "momentum", "nesterov", "betas", "eps"):
        value = getattr(cfg, key)
        if _accepts(cls, key):
            kw[key] = tuple(value) if key == "betas" else value
        elif value != defaults[key].default:
            users = [n for n in OPTIMIZERS if _accepts(OPTIMIZERS.get(n), key)]
            raise ConfigError(f"optim.{key} does not apply to {cfg.name!r}; it applies to: {', '.join(users)}")
    if not {"fused", "foreach"} & cfg.args.keys():  # flags given in optim.args win
        kw.update(implementation_kwargs(cls, cfg.implementation))
    valid = [p for p in inspect.signature(cls).parameters if p not in ("params", "self")]
    refuse_unknown(cfg.args, valid, f"optimizer {cfg.name!r}", "optim.args.{}", option=True)
    kw.update(cfg.args)
    return kw


def implementation_kwargs(cls: type, implementation: str) -> dict[str, Any]:
    """``fused``/``foreach`` flags for ``optim.implementation``; refused where ``cls`` lacks them."""
    fused, foreach = _accepts(cls, "fused"), _accepts(cls, "foreach")
    if implementation == "auto":
        # torch defaults to the per-parameter for-loop on CPU: for the MNIST-1D CNN with Adam the
        # fused kernel saved 0.26 ms of a 2.5 ms step on the 2-core CPU (benchmarks/README.md).
        return {"fused": True} if fused else {"foreach": True} if foreach else {}
    if implementation == "fused" and not fused:
        users = [n for n in OPTIMIZERS if _accepts(OPTIMIZERS.get(n), "fused")]
        raise ConfigError(
            f"optim.implementation=fused: {cls.__name__} has no fused kernel; these do: {', '.join(users)}"
        )
    if implementation == "foreach" and not foreach:
        raise ConfigError(f"optim.implementation=foreach: {cls.__name__} has no foreach implementation")
    if implementation == "fused":
        return {"fused": True}
    if implementation == "foreach":
        return {"foreach": True}
    return {"foreach": False} if foreach else {}


def split_decay(group: dict[str, Any], weight_decay: float, decay_all: bool) -> list[dict[str, Any]]:
    """``group`` as a decayed group of its >= 2-D tensors and an undecayed one of the rest (biases, norms).

    timm's ``param_groups_weight_decay`` makes the same split, but it would make validation (which
    builds the optimiser over a probe) import timm, and it drops frozen parameters, which a transfer
    model keeps in its groups on purpose.
    """
    params = list(group["params"])
    if decay_all or weight_decay == 0:
        return [{**group, "params": params}]
    decay = {**group, "params": [p for p in params if p.dim() >= 2]}
    return [decay, {**group, "params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def param_groups(model: nn.Module, weight_decay: float, decay_all: bool) -> list[dict[str, Any]]:
    """``model``'s trainable parameters split for weight decay (see :func:`split_decay`)."""
    return split_decay({"params": [p for p in model.parameters() if p.requires_grad]}, weight_decay, decay_all)


def create_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Build the configured optimiser over ``model``'s trainable parameters."""
    kw = optimizer_kwargs(cfg)
    cls = OPTIMIZERS.get(cfg.name, what="optimizer")
    if not _accepts(cls, "weight_decay"):
        return cls([p for p in model.parameters() if p.requires_grad], **kw)
    if isinstance(model, HasParamGroups):
        # A model whose parts learn at different rates (transfer: backbone vs head) names its groups,
        # frozen parameters included (it may unfreeze them later); each is split for weight decay.
        groups = [
            g
            for part in model.param_groups(cfg.lr)
            for g in split_decay(part, cfg.weight_decay, cfg.decay_norm_and_bias)
        ]
        return cls([g for g in groups if g["params"]], **kw)
    return cls(param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias), **kw)


# A schedule builder returns the scheduler and whether it steps per "epoch" or per "step".
ScheduleBuilder = Callable[[torch.optim.Optimizer, ScheduleConfig, int, int], tuple[Any, str]]
SCHEDULERS: Registry[ScheduleBuilder] = Registry("schedulers", "learning-rate schedules")


@SCHEDULERS.register("constant")
def _constant(opt: torch.optim.Optimizer, c: ScheduleConfig, epochs: int, steps: int) -> tuple[Any, str]:
    return sched.ConstantLR(opt, factor=1.0, total_iters=0), "epoch"


@SCHEDULERS.register("step")
def _step(opt: torch.optim.Optimizer, c: ScheduleConfig, epochs: int, steps: int) -> tuple[Any, str]:
    return sched.StepLR(opt, step_size=c.step_size, gamma=c.gamma), "epoch"


@SCHEDULERS.register("multistep")
def _multistep(opt: torch.optim.Optimizer, c: ScheduleConfig, epochs: int, steps: int) -> tuple[Any, str]:
    return sched.MultiStepLR(opt, milestones=c.milestones, gamma=c.gamma), "epoch"


@SCHEDULERS.register("exponential")
def _exponential(opt: torch.optim.Optimizer, c: ScheduleConfig, epochs: int, steps: int) -> tuple[Any, str]:
    return sched.ExponentialLR(opt, gamma=c.gamma), "epoch"


@SCHEDULERS.register("cosine")
def _cosine(opt: torch.optim.Optimizer, c: ScheduleConfig, epochs: int, steps: int) -> tuple[Any, str]:
    return sched.CosineAnnealingLR(opt, T_max=max(1, epochs - c.warmup_epochs), eta_min=c.min_lr), "epoch"


@SCHEDULERS.register("cosine_restarts")
def _restarts(opt: torch.optim.Optimizer, c: ScheduleConfig, epochs: int, steps: int) -> tuple[Any, str]:
    return sched.CosineAnnealingWarmRestarts(
        opt, T_0=c.restart_epochs, T_mult=c.restart_mult, eta_min=c.min_lr
    ), "epoch"


@SCHEDULERS.register("onecycle")
def _onecycle(opt: torch.optim.Optimizer, c: ScheduleConfig, epochs: int, steps: int) -> tuple[Any, str]:
    # One-cycle has its own warm-up phase; it steps every batch.
    max_lr = [g["lr"] for g in opt.param_groups]
    return sched.OneCycleLR(opt, max_lr=max_lr, total_steps=max(2, epochs * steps)), "step"


@SCHEDULERS.register("plateau")
def _plateau(opt: torch.optim.Optimizer, c: ScheduleConfig, epochs: int, steps: int) -> tuple[Any, str]:
    return sched.ReduceLROnPlateau(opt, mode="min", factor=c.gamma, patience=c.patience), "epoch"


class WarmupPlateau(sched.ReduceLROnPlateau):
    """Reduce-on-plateau after a linear warmup over ``warmup_epochs`` (``SequentialLR`` cannot chain plateau,
    whose ``step`` takes the monitored metric; Lightning passes it to any ``ReduceLROnPlateau``)."""

    def __init__(self, opt: torch.optim.Optimizer, c: ScheduleConfig) -> None:
        super().__init__(opt, mode="min", factor=c.gamma, patience=c.patience)
        self.warmup_epochs, self.warmup_start = c.warmup_epochs, c.warmup_start
        self.base_lrs = [g["lr"] for g in opt.param_groups]
        self.warmup_done = 0
        self._set(0)

    def _set(self, epoch: int) -> None:
        frac = self.warmup_start + (1 - self.warmup_start) * min(epoch / self.warmup_epochs, 1.0)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * frac

    def step(self, metrics: Any, epoch: int | None = None) -> None:  # type: ignore[override]
        """Warm up for the first epochs, then reduce on plateau of ``metrics``."""
        if self.warmup_done < self.warmup_epochs:
            self.warmup_done += 1
            self._set(self.warmup_done)
            self._last_lr = [g["lr"] for g in self.optimizer.param_groups]
            return
        super().step(metrics)


def check_schedule(c: ScheduleConfig) -> None:
    """Refuse an unknown schedule and settings that do not combine with it."""
    SCHEDULERS.check(c.name, what="schedule")
    if c.warmup_epochs and c.name == "onecycle":
        raise ConfigError(
            "optim.schedule.warmup_epochs does not combine with 'onecycle', which warms up by itself "
            "(its first 30% of steps)"
        )


def create_scheduler(
    opt: torch.optim.Optimizer, c: ScheduleConfig, max_epochs: int, steps_per_epoch: int
) -> dict[str, Any]:
    """A Lightning ``lr_scheduler`` dict for the configured schedule, with optional linear warmup."""
    check_schedule(c)
    main, interval = SCHEDULERS.get(c.name, what="schedule")(opt, c, max_epochs, steps_per_epoch)
    if c.warmup_epochs and c.name == "plateau":
        main = WarmupPlateau(opt, c)
    elif c.warmup_epochs:
        warm = sched.LinearLR(opt, start_factor=c.warmup_start, total_iters=c.warmup_epochs)
        main = sched.SequentialLR(opt, [warm, main], milestones=[c.warmup_epochs])
    out: dict[str, Any] = {"scheduler": main, "interval": interval}
    if c.name == "plateau":
        out["monitor"] = "val_loss"
    return out


def cycle_ends(restart_epochs: int, restart_mult: int, warmup: int, max_epochs: int) -> list[int]:
    """Epoch indices (0-based) at whose end a ``cosine_restarts`` cycle finishes, within ``max_epochs``."""
    ends, start, length = [], warmup, restart_epochs
    while start + length <= max_epochs:
        ends.append(start + length - 1)
        start += length
        length *= restart_mult
    return ends


def check_snapshot(cfg: RunConfig) -> None:
    """A snapshot ensemble needs a cyclic schedule with at least ``members`` cycles in ``max_epochs``."""
    s, members = cfg.optim.schedule, cfg.regularization.ensemble.members if cfg.regularization.ensemble else 0
    if s.name != "cosine_restarts":
        raise ConfigError(
            "regularization.ensemble.method 'snapshot' takes one snapshot per cycle of a cyclic schedule; "
            "set optim.schedule.name: cosine_restarts"
        )
    n = len(cycle_ends(s.restart_epochs, s.restart_mult, s.warmup_epochs, cfg.trainer.max_epochs))
    if n < members:
        raise ConfigError(
            f"snapshot ensemble of {members} members needs {members} restart cycles, but trainer.max_epochs="
            f"{cfg.trainer.max_epochs} holds {n} of optim.schedule.restart_epochs={s.restart_epochs}"
        )
