"""Fair comparisons: tune a compare-study variant's strength before its seeds are run.

At a fixed, arbitrary strength most penalties barely move the result, which says little about the remedy.
A compare study may give a variant a small search (``tune: {variant: {space, n_trials, metric}}``): it runs
as an ordinary search study (``<study>.tune.<variant>``, same storage, same MLflow experiment) on the
variant's config with the first seed, scored on validation data (``best_val_acc`` by default, never the
test set); the best parameters are stored on the compare study (``dlsuite.tuned.<variant>``), so a
resumed study does not tune again, and every seed of the variant trains with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from dlsuite.config import apply_overrides
from dlsuite.hpo.spec import ParamSpec, StudySpec, _Strict
from dlsuite.tracking import record

if TYPE_CHECKING:
    import optuna

TUNED_ATTR = record.TUNED_PREFIX


class TuneSpec(_Strict):
    """A variant's own small search, run before its seeds."""

    space: dict[str, ParamSpec]
    """Config key -> distribution (e.g. ``regularization.l2: {type: float, low: 1e-4, high: 1e-1, log: true}``)."""
    n_trials: int = Field(8, ge=1)
    """Trials of the variant's search."""
    metric: str = "best_val_acc"
    """Validation metric to optimise (the test set stays untouched until the comparison)."""
    direction: str = "maximize"


def tuned_params(study: optuna.Study, variant: str) -> dict[str, Any]:
    """The parameters a variant was tuned to (empty when it has no search)."""
    return dict(study.user_attrs.get(TUNED_ATTR + variant, {}))


def tune_spec(spec: StudySpec, variant: str, tune: TuneSpec) -> StudySpec:
    """The search study that tunes ``variant``: its config, the first seed, the variant's space."""
    base = apply_overrides(apply_overrides(spec.base, spec.overrides), [*spec.variants[variant], *spec.sets])
    return StudySpec.model_validate(
        {
            "name": f"{spec.name}.tune.{variant}",
            "type": "search",
            "base": base,
            "overrides": [f"seed={spec.seeds[0]}"],
            "space": {k: p.model_dump(exclude_none=True) for k, p in tune.space.items()},
            "metric": tune.metric,
            "direction": tune.direction,
            "n_trials": tune.n_trials,
            "sampler": {"name": "tpe", "n_startup_trials": max(2, tune.n_trials // 2)},
            "seed": spec.seed,
            "storage": spec.storage,
            "experiment": spec.mlflow_experiment,
            "population": spec.population,
        }
    )


def tune_variants(spec: StudySpec, study: optuna.Study, workers: int = 1, gpus: list[str] | None = None) -> None:
    """Run each variant's search that has not run yet and store its best parameters on ``study``."""
    from dlsuite.hpo.study import run_study

    tunes: dict[str, TuneSpec] = {v: TuneSpec.model_validate(t) for v, t in spec.tune.items()}
    for variant, tune in tunes.items():
        if TUNED_ATTR + variant in study.user_attrs:
            continue  # tuned in an earlier (resumed) run of the study
        inner = tune_spec(spec, variant, tune)
        result = run_study(inner, workers=workers, gpus=gpus)
        import optuna

        done = optuna.load_study(study_name=inner.name, storage=study._storage)
        best = done.best_trial.params if any(t.value is not None for t in done.trials) else {}
        study.set_user_attr(TUNED_ATTR + variant, best)
        print(f"variant {variant!r} tuned on {tune.metric} over {sum(result.counts.values())} trials: {best}")
