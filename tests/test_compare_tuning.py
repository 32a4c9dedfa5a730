"""Fair comparisons: a compare-study variant tuned on validation data before its seeds run."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from dlsuite.errors import ConfigError
from dlsuite.hpo.spec import load_study_spec, validate
from dlsuite.hpo.study import run_study
from dlsuite.reports.comparison import compare_report
from dlsuite.reports.study import report_study
from dlsuite.tracking import record

REPO = Path(__file__).resolve().parents[1]

STUDY = f"""
name: fair
type: compare
base: {REPO / "configs" / "mnist1d_cnn.yaml"}
overrides: [trainer.max_epochs=2, data.train_samples=200, data.args.val_samples=200, model.width=8,
            tracking.log_checkpoint=false, tracking.plots=false]
seeds: [0, 1]
variants:
  none: []
  l2: [regularization.l2=1e-3]
tune:
  l2:
    space: {{regularization.l2: {{type: float, low: 1e-4, high: 1e-1, log: true}}}}
    n_trials: 3
"""


@pytest.mark.slow
def test_a_tuned_variant_runs_its_seeds_at_the_strength_it_was_tuned_to(store: str, tmp_path: Path) -> None:
    path = tmp_path / "fair.yaml"
    path.write_text(STUDY)
    spec = load_study_spec(path)
    result = run_study(spec)
    report_study(spec, result)
    assert result.counts.get("COMPLETE") == 4
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(result.storage))
    study = optuna.load_study(study_name="fair", storage=storage)
    tuned = study.user_attrs[record.TUNED_PREFIX + "l2"]["regularization.l2"]
    inner = optuna.load_study(study_name="fair.tune.l2", storage=storage)
    assert len(inner.trials) == 3 and inner.best_trial.params["regularization.l2"] == tuned
    assert record.TUNED_PREFIX + "none" not in study.user_attrs
    c = MlflowClient(store)
    children = c.search_runs(
        [c.get_experiment_by_name("fair").experiment_id], filter_string=record.tag_filter(record.VARIANT, "l2")
    )
    children = [r for r in children if r.data.tags.get(record.PARENT) == result.parent_run_id]
    assert len(children) == 2  # both seeds of the tuned variant, under the compare study's parent
    for run in children:
        assert float(run.data.params["regularization.l2"]) == pytest.approx(tuned)  # trained at the tuned strength
        assert float(run.data.tags[record.TUNED_PREFIX + "regularization.l2"]) == pytest.approx(tuned)
    # the comparison report reads the tuned strength back from what the runner recorded
    cmp, _ = compare_report(result.parent_run_id, log=False)
    assert float(cmp.row("l2").tuned["regularization.l2"]) == pytest.approx(tuned) and cmp.row("none").tuned == {}
    # resuming does not tune again
    again = run_study(load_study_spec(path))
    assert again.counts.get("COMPLETE") == 4
    assert len(optuna.load_study(study_name="fair.tune.l2", storage=storage).trials) == 3


def test_a_bad_tuning_search_is_refused_before_anything_runs(store: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(STUDY.replace("low: 1e-4", "low: -1"))
    with pytest.raises(ConfigError, match="log"):
        validate(load_study_spec(path))
    path.write_text(STUDY.replace("  l2:\n    space", "  l3:\n    space"))
    with pytest.raises(ConfigError, match="'tune' names no variant"):
        load_study_spec(path)
    assert not (tmp_path / "mlruns").exists()
