"""Optuna samplers and pruners by name (``dlsuite list samplers`` / ``dlsuite list pruners``).

A study file names them and passes options as further keys (``sampler: {name: tpe, n_startup_trials: 5}``);
options a class does not take are refused with the list of those it does take, before any trial runs.
"""

from __future__ import annotations

import importlib.util
import inspect
from typing import Any

import optuna

from dlsuite.errors import ConfigError, did_you_mean
from dlsuite.registry import Registry

SAMPLERS: Registry[type[optuna.samplers.BaseSampler]] = Registry("samplers", "Optuna samplers (study files)")
PRUNERS: Registry[type[optuna.pruners.BasePruner]] = Registry("pruners", "Optuna pruners (study files)")


class _GridSampler(optuna.samplers.GridSampler):
    # Optuna's GridSampler calls study.stop() when the grid is exhausted, which only works inside
    # study.optimize; dlsuite's workers ask/tell themselves and check is_exhausted before asking.
    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


for _name, _cls in {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "grid": _GridSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "gp": optuna.samplers.GPSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
}.items():
    SAMPLERS.add(_name, _cls)  # type: ignore[arg-type]

for _name, _pcls in {
    "none": optuna.pruners.NopPruner,
    "median": optuna.pruners.MedianPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
}.items():
    PRUNERS.add(_name, _pcls)  # type: ignore[arg-type]

# Samplers whose work needs a package beyond optuna's own dependencies.
_NEEDS = {"cmaes": "cmaes"}
# Arguments dlsuite fills itself (or that take code), so a study file cannot set them.
_RESERVED = {"seed", "search_space", "constraints_func", "independent_sampler", "crossover", "gamma", "weights"}


def _options(kind: str, name: str, cls: type, options: dict[str, Any]) -> dict[str, Any]:
    valid = [p for p in inspect.signature(cls).parameters if p not in ("self", *_RESERVED)]
    for key in options:
        if key not in valid:
            raise ConfigError(
                f"{kind} {name!r} has no option {key!r}{did_you_mean(key, valid)}; its options: {', '.join(valid)}"
            )
    return dict(options)


def check_sampler(name: str, options: dict[str, Any], n_objectives: int) -> None:
    """Refuse unknown samplers, options, and samplers that cannot handle ``n_objectives``."""
    cls = SAMPLERS.get(name, what="sampler")
    _options("sampler", name, cls, options)
    if n_objectives > 1 and name == "cmaes":
        raise ConfigError(f"sampler {name!r} optimises one objective; for several use nsga2, tpe or random")
    pkg = _NEEDS.get(name)
    if pkg and importlib.util.find_spec(pkg) is None:
        raise ConfigError(f"sampler {name!r} needs the package {pkg!r}: pip install {pkg}")


def create_sampler(
    name: str, options: dict[str, Any], seed: int | None, grid: dict[str, list[Any]] | None = None
) -> optuna.samplers.BaseSampler:
    """Build the named sampler; ``grid`` is the search space the grid sampler enumerates."""
    cls = SAMPLERS.get(name, what="sampler")
    kw = _options("sampler", name, cls, options)
    if name == "grid":
        return cls(grid or {}, seed=seed, **kw)  # type: ignore[call-arg]
    return cls(seed=seed, **kw)  # type: ignore[call-arg]


def create_pruner(name: str, options: dict[str, Any]) -> optuna.pruners.BasePruner:
    """Build the named pruner with its options."""
    cls = PRUNERS.get(name, what="pruner")
    return cls(**_options("pruner", name, cls, options))
