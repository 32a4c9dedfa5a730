"""Which run configs can share a population, and why the others fall back to the sequential runner.

A population shares everything that determines the computation's shape or its non-scalar behaviour:
model family and knobs, data and its arguments, batch size, epochs, task and loss, optimiser family.
Its members may differ in the keys of :data:`PER_MEMBER` only. A config that uses something not
vectorised yet (augmentation, k-fold, mixup, SWA, ...) keeps the sequential runner,
with a one-line reason (what ``--check`` shows).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dlsuite.config import RunConfig
from dlsuite.population.optim import POPULATION_OPTIMIZERS
from dlsuite.population.schedule import METRIC_SCHEDULES

#: Models whose population runs are tested against their sequential runs (tests/test_population.py).
POPULATION_MODELS = ("linear", "mlp", "mnist1d_mlp", "cnn", "mnist1d_cnn", "lenet", "resnet")

#: Keys (or key prefixes, ending in ".") each member may set for itself.
PER_MEMBER = (
    "name",
    "seed",
    "optim.lr",
    "optim.momentum",
    "optim.nesterov",
    "optim.weight_decay",
    "optim.betas",
    "optim.eps",
    "optim.schedule.",
    "model.dropout",
    "regularization.label_smoothing",
    "regularization.l1",
    "regularization.l2",
    "optim.grad_clip",
)
#: How a sequential run is executed or recorded, not what it computes: ignored here.
IGNORED = (
    "tracking.",
    "trainer.progress_bar",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.deterministic",
    "trainer.cudnn_benchmark",
    "trainer.matmul_precision",
    "trainer.checkpoint_",
    "trainer.test_checkpoint",
    "optim.implementation",
    "data.num_workers",
    "data.in_memory",
    "data.download",
)
#: Keys that must keep their default value: not vectorised yet.
UNSUPPORTED = (
    "data.augment",
    "data.folds",
    "data.fold",
    "data.bootstrap_seed",
    "task.loss",
    "task.loss_args",
    "optim.args",
    "regularization.",
    "trainer.strategy",
    "trainer.num_nodes",
    "trainer.compile",
    "trainer.channels_last",
    "trainer.check_val_every_n_epoch",
)


def _flat(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _matches(key: str, names: Sequence[str]) -> bool:
    return any(key == n or (n.endswith(".") and key.startswith(n)) for n in names)


def varies_per_member(key: str) -> bool:
    """Whether config key ``key`` may differ between the members of one population (or is ignored)."""
    return _matches(key, PER_MEMBER + IGNORED)


@functools.cache
def _defaults() -> dict[str, Any]:
    return dict(_flat(RunConfig().to_dict()))


#: Precisions a population trains in: float32, or bfloat16 autocast as Lightning's ``bf16-mixed``.
POPULATION_PRECISIONS = ("32-true", "bf16-mixed")


def population_precision(cfg: RunConfig) -> str:
    """The Lightning precision the run would train in (``auto`` and ``32`` resolved)."""
    from dlsuite.techniques.speed import resolve_precision

    precision = resolve_precision(cfg.trainer)
    return {"32": "32-true", "64": "64-true"}.get(precision, precision)


def why_not(cfg: RunConfig) -> str | None:
    """Why ``cfg`` cannot train in a population (one line), or None when it can."""
    if cfg.task.name != "classification":
        return f"task {cfg.task.name!r}: populations train classification only"
    if cfg.model.name not in POPULATION_MODELS:
        return f"model {cfg.model.name!r} is not vectorised yet (vectorised: {', '.join(POPULATION_MODELS)})"
    if cfg.optim.name not in POPULATION_OPTIMIZERS:
        return f"optimizer {cfg.optim.name!r} is not vectorised (vectorised: {', '.join(POPULATION_OPTIMIZERS)})"
    if cfg.optim.schedule.name in METRIC_SCHEDULES:
        return f"schedule {cfg.optim.schedule.name!r} steps on a validation metric, member by member"
    precision = population_precision(cfg)
    if precision not in POPULATION_PRECISIONS:
        return (
            f"trainer.precision={cfg.trainer.precision} ({precision}) is not vectorised "
            f"(vectorised: {', '.join(POPULATION_PRECISIONS)}; 16-mixed needs a gradient scaler per member)"
        )
    devices = cfg.trainer.devices
    if (isinstance(devices, int) and devices > 1) or (isinstance(devices, list) and len(devices) > 1):
        return "trainer.devices > 1: a population trains on one device"
    for key, value in _flat(cfg.to_dict()):
        if _matches(key, UNSUPPORTED) and not _matches(key, PER_MEMBER) and value != _defaults().get(key):
            return f"{key}={json.dumps(value, default=str)} is not vectorised yet"
    return None


def structure_key(cfg: RunConfig) -> str:
    """What members of one population must share, as a comparable string."""
    shared = {k: v for k, v in _flat(cfg.to_dict()) if not _matches(k, PER_MEMBER + IGNORED)}
    # The rate is a per-member buffer, but a rate of 0 can drop the dropout layer (cnn): structure.
    shared["dropout"] = bool(cfg.model.knobs.get("dropout"))
    return json.dumps(shared, sort_keys=True, default=str)


@dataclass
class Group:
    """Configs (by index) that train together, or one that trains alone and why."""

    runner: str  # "population" or "sequential"
    members: list[int] = field(default_factory=list)
    reason: str = ""


def plan(cfgs: Sequence[RunConfig], max_size: int = 64) -> list[Group]:
    """Group ``cfgs`` into populations of at most ``max_size`` same-structure members; the rest alone."""
    groups: list[Group] = []
    by_key: dict[str, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        reason = why_not(cfg)
        if reason is not None:
            groups.append(Group("sequential", [i], reason))
        else:
            by_key.setdefault(structure_key(cfg), []).append(i)
    for members in by_key.values():
        for start in range(0, len(members), max_size):
            chunk = members[start : start + max_size]
            if len(chunk) == 1:
                groups.append(Group("sequential", chunk, "no other config shares its structure"))
            else:
                groups.append(Group("population", chunk, f"{len(chunk)} members share their structure"))
    return sorted(groups, key=lambda g: g.members[0])


def describe(groups: Sequence[Group]) -> list[str]:
    """One line per group: which runner trains which configs, and why."""
    return [
        f"{g.runner:>10}: config{'s' if len(g.members) > 1 else ''} {', '.join(map(str, g.members))} ({g.reason})"
        for g in groups
    ]
