"""``dlsuite train CONFIG --seeds 0-9``: one config over several seeds, with the mean and 95% interval.

The seeds train as one population (``population/``, one vectorised step for all) when
:func:`seeds_reason` finds nothing against it, else one after the other with :func:`train`
(the reason is printed and tagged). Either way MLflow gets one parent run (the config's params, seed
given as the seeds, the members' mean curves, and ``<metric>_mean`` / ``_ci_low`` / ``_ci_high`` of
every final metric) with one child run per seed, recorded as a plain ``dlsuite train`` run with that
seed is (``runner/seeds_population.py`` writes them for a population).

``--seeds`` is a list of seed values: ``0-9`` (both ends included), ``0,3,7``, ``0-4,10``. A lone
number is one seed, which is refused: an interval needs two seeds, and one seed is ``--set seed=N``.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from dlsuite.config import RunConfig, build_config, set_dotted
from dlsuite.errors import ConfigError
from dlsuite.runner.intervals import Summary, describe_seeds
from dlsuite.tracking import record
from dlsuite.tracking.runs import TrackedRun

MAX_SEEDS = 1000
"""More seeds than this is taken for a typo (``0-10000``)."""
_ITEM = re.compile(r"(\d+)(?:-(\d+))?")


def parse_seeds(text: str) -> list[int]:
    """The seeds ``text`` names: comma-separated seeds or inclusive ranges (``0-9``, ``0,3,7``, ``0-4,10``).

    Raises:
        ConfigError: a malformed item, a descending range, a repeated seed, fewer than 2 seeds or
            more than :data:`MAX_SEEDS`.
    """
    allowed = "write seeds as 0-9 (both ends included), 0,3,7 or 0-4,10"
    seeds: list[int] = []
    for item in text.replace(" ", "").split(","):
        m = _ITEM.fullmatch(item)
        if m is None:
            raise ConfigError(f"--seeds {text!r}: {item!r} is not a seed or a range of seeds; {allowed}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ConfigError(f"--seeds {text!r}: range {item!r} runs downwards; write {hi}-{lo}")
        if hi - lo >= MAX_SEEDS or hi > 2**32 - 1:
            raise ConfigError(f"--seeds {text!r}: at most {MAX_SEEDS} seeds, each below 2**32")
        seeds.extend(range(lo, hi + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"--seeds {text!r}: seed {repeated[0]} is named twice; each seed trains once")
    if len(seeds) < 2:
        raise ConfigError(
            f"--seeds {text!r} names one seed; an interval needs at least two "
            f"(five seeds: --seeds 0-4; one run with seed {seeds[0]}: --set seed={seeds[0]})"
        )
    if len(seeds) > MAX_SEEDS:
        raise ConfigError(f"--seeds {text!r}: {len(seeds)} seeds; at most {MAX_SEEDS}")
    return seeds


def seeds_text(seeds: list[int]) -> str:
    """``0-9`` for consecutive seeds, else ``0,3,7``: how the parent's ``seed`` param shows them."""
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def seed_config(cfg: RunConfig, seed: int, run_name: str | None = None) -> RunConfig:
    """``cfg`` with ``seed`` (and ``tracking.run_name``), validated again."""
    data = cfg.to_dict()
    set_dotted(data, "seed", seed)
    if run_name is not None:
        set_dotted(data, "tracking.run_name", run_name)
    return build_config(data, "(seed member)")


def seeds_reason(cfg: RunConfig) -> str | None:
    """Why the seeds of ``cfg`` cannot train as one population (one line), or None when they can."""
    from dlsuite.population.group import why_not
    from dlsuite.runner.seeds_population import MONITORS

    reason = why_not(cfg)
    if reason is None and cfg.trainer.checkpoint_monitor not in MONITORS:
        monitor = cfg.trainer.checkpoint_monitor
        reason = f"trainer.checkpoint_monitor={monitor!r} (a population monitors {', '.join(MONITORS)})"
    return reason


@dataclass
class SeedsResult:
    """What ``train --seeds`` produced: the parent run, how it ran, each seed's numbers, their summary."""

    parent_run_id: str | None
    status: str
    runner: str
    """``population`` or ``sequential``."""
    reason: str | None
    """Why the seeds ran one by one (None for a population)."""
    seeds: list[int]
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    """Each finished seed's summary numbers (as a plain run's)."""
    failed: dict[int, str] = field(default_factory=dict)
    """Seeds whose run failed (diverged), and why."""
    summary: dict[str, Summary] = field(default_factory=dict)
    """Mean and 95% interval over the finished seeds of each final metric."""


def summarize_seeds(per_seed: list[dict[str, float]]) -> dict[str, Summary]:
    """Mean and 95% t-interval of every final metric (:data:`record.SEEDS_METRIC_PREFIXES`) the seeds share."""
    if not per_seed:
        return {}
    keys = [k for k in per_seed[0] if k.startswith(record.SEEDS_METRIC_PREFIXES)]
    keys = [k for k in keys if all(k in m for m in per_seed)]
    return {k: describe_seeds([m[k] for m in per_seed]) for k in sorted(keys, key=_order)}


def _order(key: str) -> tuple[int, str]:
    return next(i for i, p in enumerate(record.SEEDS_METRIC_PREFIXES) if key.startswith(p)), key


def parent_metrics(summary: dict[str, Summary]) -> dict[str, float]:
    """The parent run's numbers: ``<metric>_mean``, ``_ci_low``, ``_ci_high`` (finite ones) and ``seeds_n``."""
    out: dict[str, float] = {}
    for k, s in summary.items():
        for stat, value in zip(record.SEEDS_STATS, (s.mean, s.lo, s.hi), strict=True):
            if math.isfinite(value):
                out[record.seeds_metric(k, stat)] = value
    out[record.SEEDS_COUNT] = float(max((s.n for s in summary.values()), default=0))
    return out


def format_table(result: SeedsResult) -> str:
    """Each final metric's mean and 95% interval over the seeds, with the seeds' range, as printed."""
    n = len(result.metrics)
    how = f"one population of {len(result.seeds)}" if result.runner == "population" else "one run after another"
    lines = [
        f"seeds {seeds_text(result.seeds)} ({how}): mean and 95% t-interval over {n} finished seed{'s' * (n != 1)}",
        f"{'metric':<18} {'mean':>9} {'95% interval':>22} {'min':>9} {'max':>9}",
    ]
    for k, s in result.summary.items():
        values = [m[k] for m in result.metrics.values() if k in m and math.isfinite(m[k])]
        interval = f"[{s.lo:.4f}, {s.hi:.4f}]" if math.isfinite(s.lo) else "(one seed)"
        lines.append(
            f"{k:<18} {s.mean:>9.4f} {interval:>22} "
            f"{min(values, default=math.nan):>9.4f} {max(values, default=math.nan):>9.4f}"
        )
    for seed, why in result.failed.items():
        lines.append(f"seed {seed} FAILED: {why}")
    return "\n".join(lines)


def _parent(cfg: RunConfig, seeds: list[int], runner: str, reason: str | None, overrides: list[str]) -> TrackedRun:
    from dlsuite.runner.run import run_tags

    tags = {**run_tags(cfg), record.SEEDS: ",".join(map(str, seeds)), record.SEEDS_RUNNER: runner}
    if reason is not None:
        tags[record.SEEDS_FALLBACK] = reason
    if overrides:
        tags[record.OVERRIDES_TAG] = " ".join(overrides)[:5000]
    shown = {k: v for k, _, v in (o.partition("=") for o in overrides) if not k.startswith("tracking.")}
    numbered = cfg.tracking.run_name is None
    name = f"{cfg.tracking.run_name or cfg.name or f'{cfg.model.name}-{cfg.data.name}'}-seeds"
    label = record.label({"seeds": seeds_text(seeds), **shown}) if numbered else ""
    return TrackedRun(cfg.tracking.uri, cfg.tracking.experiment, name, tags, None, number=numbered, label=label)


def _log_parent(
    parent: TrackedRun, cfg: RunConfig, seeds: list[int], result: SeedsResult, histories: list[Any]
) -> None:
    from mlflow.entities import Metric

    from dlsuite.runner.protocols import mean_history
    from dlsuite.tracking.env import environment

    parent.log_config(cfg, {**environment(), "seed": seeds_text(seeds)})
    metrics = parent_metrics(result.summary)
    rows = [Metric(k, v, 0, 0) for k, v in metrics.items()]
    for row in mean_history(histories):  # the seeds' mean curves, as a single run's
        rows += [Metric(k, v, 0, int(row["epoch"])) for k, v in row.items() if k != "epoch" and math.isfinite(v)]
    parent.client.log_batch(parent.run_id, metrics=rows)


def train_seeds(
    cfg: RunConfig, seeds: list[int], overrides: list[str] | None = None, sequential: bool = False
) -> SeedsResult:
    """Train ``cfg`` once per seed, as one population when it can be (:func:`seeds_reason`), else one by one.

    Everything that can be refused is checked before the parent run is created (nothing written then).
    A seed that diverges fails alone (its child run FAILED, listed in ``failed``); the others go on.
    ``sequential`` trains one by one whatever the config (what ``benchmarks/population.py`` compares).
    """
    from dlsuite.build import build_run
    from dlsuite.runner import protocols, seeds_population
    from dlsuite.runner.run import is_rank_zero

    overrides = list(overrides or [])
    reason = "sequential runs asked for" if sequential else seeds_reason(cfg)
    runner = "population" if reason is None else "sequential"
    prepared = seeds_population.prepare(cfg, seeds) if reason is None else None
    if prepared is None and protocols.protocol_of(cfg) is None:
        build_run(seed_config(cfg, seeds[0]))  # data and model buildable before the parent run exists
    tracked = cfg.tracking.enabled and is_rank_zero()
    parent = _parent(cfg, seeds, runner, reason, overrides) if tracked else None
    result = SeedsResult(None, "FINISHED", runner, reason, list(seeds))
    histories: list[Any] = []
    with parent if parent is not None else contextlib.nullcontext():
        pid = parent.run_id if parent is not None else None
        result.parent_run_id = pid
        if prepared is not None:
            members = seeds_population.train_members(prepared, pid, overrides)
        else:
            members = _sequential(cfg, seeds, pid, overrides)
        for seed, (metrics, history, failure) in zip(seeds, members, strict=True):
            if failure is None:
                result.metrics[seed] = metrics
                histories.append(history)
            else:
                result.failed[seed] = failure
        result.summary = summarize_seeds(list(result.metrics.values()))
        if parent is not None:
            _log_parent(parent, cfg, seeds, result, histories)
    result.status = parent.status if parent is not None else "FINISHED"
    return result


Member = tuple[dict[str, float], list[dict[str, float]], str | None]
"""A seed's summary numbers, per-epoch history and failure (None when it finished)."""


def _sequential(cfg: RunConfig, seeds: list[int], parent_id: str | None, overrides: list[str]) -> list[Member]:
    from dlsuite.runner.run import TrainingDiverged, train

    out: list[Member] = []
    for seed in seeds:
        child = seed_config(cfg, seed, _member_name(cfg, seed))
        try:
            r = train(child, parent_run_id=parent_id, tags={record.SEED: str(seed)}, overrides=overrides)
        except TrainingDiverged as exc:
            out.append(({}, [], str(exc)))
            continue
        out.append((r.metrics, r.history, None))
    return out


def _member_name(cfg: RunConfig, seed: int) -> str:
    """A child's run name: the config's, then its seed (``mnist1d_cnn seed=3``)."""
    return f"{cfg.tracking.run_name or cfg.name or f'{cfg.model.name}-{cfg.data.name}'} seed={seed}"
