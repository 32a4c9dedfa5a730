"""Optuna samplers and pruners by name (``dlsuite list samplers`` / ``dlsuite list pruners``).

A study file names them and passes options as further keys (``sampler: {name: tpe, n_startup_trials: 5}``);
options a class does not take are refused with the list of those it does take, before any trial runs.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

from dlsuite.errors import ConfigError, refuse_unknown
from dlsuite.registry import Registry

if TYPE_CHECKING:
    import optuna

# Lazy entries: naming and checking a sampler does not import Optuna (it takes about a second).
SAMPLERS: Registry[type[optuna.samplers.BaseSampler]] = Registry("samplers", "Optuna samplers (study files)")
PRUNERS: Registry[type[optuna.pruners.BasePruner]] = Registry("pruners", "Optuna pruners (study files)")
for _name, _target in {
    "tpe": "optuna.samplers:TPESampler",
    "random": "optuna.samplers:RandomSampler",
    "grid": "dlsuite.hpo.grid:GridSampler",
    "cmaes": "optuna.samplers:CmaEsSampler",
    "qmc": "optuna.samplers:QMCSampler",
    "gp": "optuna.samplers:GPSampler",
    "nsga2": "optuna.samplers:NSGAIISampler",
}.items():
    SAMPLERS.add_lazy(_name, _target)
for _name, _target in {
    "none": "optuna.pruners:NopPruner",
    "median": "optuna.pruners:MedianPruner",
    "successive_halving": "optuna.pruners:SuccessiveHalvingPruner",
    "hyperband": "optuna.pruners:HyperbandPruner",
}.items():
    PRUNERS.add_lazy(_name, _target)

# Samplers whose work needs a package beyond optuna's own dependencies.
_NEEDS = {"cmaes": "cmaes"}

#: The options a study file may give each sampler and pruner: their constructors' keyword arguments, less
#: those dlsuite fills itself (seed, search space) and those that take code. Declared so that checking a
#: study file does not import Optuna; a test checks each against the class's signature.
OPTIONS: dict[str, tuple[str, ...]] = {
    "tpe": (
        "consider_prior",
        "prior_weight",
        "consider_magic_clip",
        "consider_endpoints",
        "n_startup_trials",
        "n_ei_candidates",
        "multivariate",
        "group",
        "warn_independent_sampling",
        "constant_liar",
    ),
    "random": (),
    "grid": (),
    "cmaes": (
        "x0",
        "sigma0",
        "n_startup_trials",
        "warn_independent_sampling",
        "consider_pruned_trials",
        "restart_strategy",
        "popsize",
        "inc_popsize",
        "use_separable_cma",
        "with_margin",
        "lr_adapt",
    ),
    "qmc": ("qmc_type", "scramble", "warn_asynchronous_seeding", "warn_independent_sampling"),
    "gp": ("n_startup_trials", "deterministic_objective", "warn_independent_sampling"),
    "nsga2": ("population_size", "mutation_prob", "crossover_prob", "swapping_prob"),
    "none": (),
    "median": ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"),
    "successive_halving": ("min_resource", "reduction_factor", "min_early_stopping_rate", "bootstrap_count"),
    "hyperband": ("min_resource", "max_resource", "reduction_factor", "bootstrap_count"),
}


def _options(kind: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
    refuse_unknown(options, OPTIONS[name], f"{kind} {name!r}", option=True)
    return dict(options)


def check_sampler(name: str, options: dict[str, Any], n_objectives: int) -> None:
    """Refuse unknown samplers, options, and samplers that cannot handle ``n_objectives``."""
    SAMPLERS.check(name, what="sampler")
    _options("sampler", name, options)
    if n_objectives > 1 and name == "cmaes":
        raise ConfigError(f"sampler {name!r} optimises one objective; for several use nsga2, tpe or random")
    pkg = _NEEDS.get(name)
    if pkg and importlib.util.find_spec(pkg) is None:
        raise ConfigError(f"sampler {name!r} needs the package {pkg!r}: pip install {pkg}")


def check_pruner(name: str, options: dict[str, Any]) -> None:
    """Refuse unknown pruners and options they do not take."""
    PRUNERS.check(name, what="pruner")
    _options("pruner", name, options)


def create_sampler(
    name: str, options: dict[str, Any], seed: int | None, grid: dict[str, list[Any]] | None = None
) -> optuna.samplers.BaseSampler:
    """Build the named sampler; ``grid`` is the search space the grid sampler enumerates."""
    cls = SAMPLERS.get(name, what="sampler")
    kw = _options("sampler", name, options)
    if name == "grid":
        return cls(grid or {}, seed=seed, **kw)  # type: ignore[call-arg]
    return cls(seed=seed, **kw)  # type: ignore[call-arg]


def create_pruner(name: str, options: dict[str, Any]) -> optuna.pruners.BasePruner:
    """Build the named pruner with its options."""
    cls = PRUNERS.get(name, what="pruner")
    return cls(**_options("pruner", name, options))
