"""What the MLflow UI shows of the suite's runs: experiment kind, run names, dataset inputs, models,
trial states and metrics logged once. Real MLflow on the temporary store of each test."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from dlsuite.runner.run import train
from dlsuite.tracking import record
from dlsuite.tracking.store import experiment_id
from tests.conftest import tiny_config


def test_experiments_are_marked_as_model_training(store: str) -> None:
    c = MlflowClient(store)
    made_by_hand = c.create_experiment("old")  # an experiment an older dlsuite (or a user) made
    result = train(tiny_config("tracking.experiment=kind", "trainer.max_epochs=1"))
    assert result.status == "FINISHED"
    assert record.EXPERIMENT_KIND_TAG not in c.get_experiment(made_by_hand).tags
    assert experiment_id(c, "old") == made_by_hand  # the suite's lookup marks it on first use
    for name in ("kind", "old"):
        exp = c.get_experiment_by_name(name)
        assert exp.tags[record.EXPERIMENT_KIND_TAG] == record.EXPERIMENT_KIND_TRAINING, name


def test_two_runs_of_one_config_get_different_names(store: str) -> None:
    cfg = ("tracking.experiment=names", "trainer.max_epochs=1", "tracking.plots=false")
    first = train(tiny_config(*cfg))
    second = train(tiny_config(*cfg), overrides=["optim.lr=0.01", "tracking.plots=false"])
    c = MlflowClient(store)
    names = [c.get_run(r.run_id).info.run_name for r in (first, second)]
    assert names == ["cnn-mnist1d-1", "cnn-mnist1d-2 lr=0.01"]  # numbered; overrides shown, tracking.* not
    assert c.get_run(second.run_id).data.tags[record.OVERRIDES_TAG] == "optim.lr=0.01 tracking.plots=false"
    named = train(tiny_config(*cfg, "tracking.run_name=mine"))
    assert c.get_run(named.run_id).info.run_name == "mine"  # an explicit name is kept as given


def test_run_name_numbering_and_labels() -> None:
    assert record.numbered("a", ["a-1", "a-3 lr=0.1", "ab-9", "a-x"]) == "a-4"
    assert record.numbered("a", []) == "a-1"
    assert record.label({"optim.lr": 0.0031234, "data.batch_size": 64}) == "lr=0.00312 batch_size=64"
    assert len(record.label({f"k{i}": i for i in range(40)}, width=20)) == 20


def test_test_metrics_are_logged_once(store: str) -> None:
    result = train(tiny_config("tracking.experiment=once", "tracking.plots=false"))
    c = MlflowClient(store)
    for key in ("test_acc", "test_loss", "test_f1"):
        assert len(c.get_metric_history(result.run_id, key)) == 1, key
    assert len(c.get_metric_history(result.run_id, "val_acc")) == 2  # per-epoch metrics: one per epoch


def test_a_run_carries_its_dataset_as_an_input(store: str) -> None:
    import json

    cfg = ("tracking.experiment=data", "trainer.max_epochs=1", "tracking.plots=false")
    a = train(tiny_config(*cfg))
    b = train(tiny_config(*cfg, "data.args.iid_noise_scale=0.05"))  # other generator arguments: other data
    c = MlflowClient(store)
    inputs = [c.get_run(r.run_id).inputs.dataset_inputs for r in (a, b)]
    assert [len(i) for i in inputs] == [1, 1]
    da, db = inputs[0][0].dataset, inputs[1][0].dataset
    assert da.name == db.name == "mnist1d" and da.digest != db.digest
    assert {t.key: t.value for t in inputs[0][0].tags} == {record.DATASET_CONTEXT_KEY: "training"}
    profile, source = json.loads(da.profile), json.loads(da.source)
    assert profile["splits"]["train"] == 300 and profile["splits"]["test"] > 0 and profile["num_classes"] == 10
    assert json.loads(db.source)["args"]["iid_noise_scale"] == 0.05 and source["args"]["iid_noise_scale"] != 0.05


def test_the_tested_weights_are_a_logged_model_that_loads(store: str) -> None:
    import mlflow.pytorch
    import torch
    from mlflow.entities import LoggedModelStatus

    result = train(tiny_config("tracking.experiment=models", "tracking.plots=false"))
    c = MlflowClient(store)
    outputs = c.get_run(result.run_id).outputs.model_outputs
    assert len(outputs) == 1
    lm = c.get_logged_model(outputs[0].model_id)
    assert lm.status == LoggedModelStatus.READY
    assert lm.source_run_id == result.run_id and lm.tags["dlsuite.model"] == "cnn" and lm.name == "cnn-mnist1d"
    linked = {m.key: m.value for m in lm.metrics or []}
    assert linked["test_acc"] == result.metrics["test_acc"] and "best_val_acc" in linked
    loaded = mlflow.pytorch.load_model(f"models:/{lm.model_id}")
    x = torch.randn(4, 1, 40)
    result.task.model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), result.task.model(x))


def test_study_trials_log_no_model_by_default() -> None:
    from dlsuite.hpo.spec import StudySpec

    spec = StudySpec.model_validate({"name": "s", "base": {}, "space": {"optim.lr": [0.1, 0.01]}, "n_trials": 2})
    assert spec.run_config().tracking.log_model is False
    assert tiny_config().tracking.log_model is True


def test_a_study_parent_carries_the_best_trial_and_a_runs_view(store: str, tmp_path: Path) -> None:
    import json

    import optuna

    from dlsuite.hpo.spec import load_study_spec
    from dlsuite.hpo.storage import open_storage, resolve_storage
    from dlsuite.hpo.study import run_study
    from tests.test_studies import write_study

    body = "space:\n  optim.lr: [0.01, 1.0e-6]\nmetric: best_val_acc\nn_trials: 2\nsampler: {name: grid}\n"
    spec = load_study_spec(write_study(tmp_path, body, name="ui"), ["trainer.max_epochs=1"])
    result = run_study(spec)
    study = optuna.load_study(study_name="ui", storage=open_storage(resolve_storage()))
    c = MlflowClient(store)
    parent = c.get_run(str(result.parent_run_id))
    assert parent.data.params["optim.lr"] == str(study.best_params["optim.lr"])
    assert parent.data.metrics["best_val_acc"] == study.best_value
    assert parent.data.tags[record.BEST_TRIAL_TAG] == str(study.best_trial.number)
    exp = c.get_experiment_by_name("ui")
    view = json.loads(exp.tags[record.SHARED_VIEW_PREFIX + "dlsuite-ui"])
    assert view["orderByKey"] == "metrics.`best_val_acc`" and view["orderByAsc"] is False
    assert {"metrics.`best_val_acc`", "params.`optim.lr`", "tags.`optuna.state`"} <= set(view["selectedColumns"])
    trials = c.search_runs([exp.experiment_id], view["searchFilter"])  # the view's filter is valid MLflow
    names = {r.info.run_name for r in trials}  # the grid's order is its own: trial numbers vary
    assert names in ({"ui-000 lr=0.01", "ui-001 lr=1e-06"}, {"ui-000 lr=1e-06", "ui-001 lr=0.01"})
    assert result.view == f"#/experiments/{exp.experiment_id}/runs?viewStateShareKey=dlsuite-ui"


def test_progress_bar_shows_epoch_loss_and_accuracies_not_v_num(store: str) -> None:
    import lightning as L

    from dlsuite.runner.progress import EpochProgressBar

    shown: list[dict[str, object]] = []

    class Look(L.Callback):  # what the bar would print after the last epoch
        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            bar = next(cb for cb in trainer.callbacks if isinstance(cb, EpochProgressBar))  # type: ignore[attr-defined]
            shown.append(bar.get_metrics(trainer, pl_module))

    train(
        tiny_config("trainer.progress_bar=true", "tracking.plots=false", "tracking.log_model=false"), callbacks=[Look()]
    )
    assert set(shown[0]) == {"train_loss", "train_acc", "val_acc"}  # no v_num


def test_threads_setting_is_applied(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import torch

    from dlsuite.techniques.speed import auto_threads

    before = torch.get_num_threads()
    try:
        train(tiny_config("trainer.threads=2", "trainer.max_epochs=1", "tracking.enabled=false"))
        assert torch.get_num_threads() == 2
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        train(tiny_config("trainer.max_epochs=1", "tracking.enabled=false"))  # auto
        assert 1 <= torch.get_num_threads() <= len(os.sched_getaffinity(0))  # the load moves: a range
        assert 1 <= auto_threads() <= len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)


def test_a_population_applies_the_threads_setting_as_a_sequential_run_does(store: str) -> None:
    import optuna
    import torch

    from dlsuite.hpo.population import PopulationRunner
    from dlsuite.hpo.runner import TrialContext

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        cfgs = [tiny_config("trainer.threads=2", "trainer.max_epochs=1", f"seed={s}") for s in (1, 2)]
        study = optuna.create_study()
        ctx = TrialContext(parent_run_id=None, tags={}, prune=False, monitor="val_acc")
        outcomes = PopulationRunner().run_group(cfgs, [study.ask(), study.ask()], ctx)
        assert [o.state for o in outcomes] == ["COMPLETE", "COMPLETE"]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_auto_threads_leave_the_reserved_cores_to_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from dlsuite.techniques.speed import auto_threads, cores_reserved

    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # a quiet machine, whatever runs beside
    cores = len(os.sched_getaffinity(0))
    assert auto_threads() == cores
    with cores_reserved(1):  # a study's figure helper
        assert auto_threads() == max(1, cores - 1)
        with cores_reserved(cores):
            assert auto_threads() == 1  # never fewer than one
    assert auto_threads() == cores
