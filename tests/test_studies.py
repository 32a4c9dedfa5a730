"""Optuna studies end to end on real Optuna journal storage and a real temporary MLflow store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import torch
from optuna.trial import TrialState
from torch import nn

from dlsuite.cli import main
from dlsuite.config import load_config
from dlsuite.errors import ConfigError
from dlsuite.hpo.spec import is_test_metric, load_study_spec
from dlsuite.hpo.storage import open_storage, resolve_storage
from dlsuite.hpo.study import assign_gpus, open_study, run_study
from dlsuite.models.api import MODELS, register_model
from dlsuite.reports.study import list_studies
from dlsuite.runner.run import train
from dlsuite.runner.summary import summary_names
from dlsuite.tracking import record

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "configs" / "mnist1d_cnn.yaml"
TINY = [
    "trainer.max_epochs=2",
    "data.train_samples=300",
    "data.args.val_samples=200",
    "model.width=8",
    "tracking.log_checkpoint=false",
    "tracking.plots=false",
]


def write_study(tmp: Path, body: str, name: str = "s") -> Path:
    """A study file whose base is the shipped MNIST-1D CNN config, with tiny run overrides."""
    path = tmp / f"{name}.yaml"
    overrides = "\n".join(f"  - {o}" for o in TINY)
    path.write_text(f"name: {name}\nbase: {CNN}\noverrides:\n{overrides}\n{body}")
    return path


def load(name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(resolve_storage()))


def runs(store: str, name: str) -> list:
    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


SEARCH = """space:
  optim.lr: {type: float, low: 1e-3, high: 3e-2, log: true}
  data.batch_size: [32, 64]
metric: best_val_acc
n_trials: 3
"""


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ("optim.lrr: {type: float, low: 0.1, high: 1}", "optim.lrr"),
        ("optim.lr: {type: float, low: 1, high: 0.1}", "low (1.0) > high (0.1)"),
        ("optim.lr: {type: float, low: 0, high: 1, log: true}", "log scale needs low > 0"),
        ("model.widht: {type: int, low: 1, high: 4}", "widht"),
        ("optim.momentum: {type: float, low: 0.1, high: 0.9}", "momentum does not apply to 'adam'"),
        ("foo.bar: [1, 2]", "not a run config key"),
        ("data.batch_size: {type: int, low: 1.5, high: 4}", "whole number"),
        ("optim.lr: {type: categorical}", "non-empty 'choices'"),
    ],
)
def test_invalid_search_space_is_refused_with_exit_2_and_nothing_written(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], space: str, expected: str
) -> None:
    path = write_study(tmp_path, f"space:\n  {space}\nn_trials: 2\n")
    with pytest.raises(ConfigError):
        load_study_spec(path)
    assert main(["study", "run", str(path)]) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("sampler: tpee\n", "did you mean 'tpe'"),
        ("sampler: {name: tpe, n_startup: 3}\n", "n_startup_trials"),
        ("pruner: medain\n", "did you mean 'median'"),
        ("objectives: [{metric: best_val_acc}, {metric: num_params, direction: minimize}]\npruner: median\n", "single"),
        ("n_trialz: 3\n", "n_trialz"),
    ],
)
def test_invalid_study_options_are_refused(store: str, tmp_path: Path, extra: str, expected: str) -> None:
    body = SEARCH.replace("metric: best_val_acc\n", "") if "objectives" in extra else SEARCH
    path = write_study(tmp_path, body + extra)
    with pytest.raises(ConfigError, match=expected):
        load_study_spec(path)


def test_budget_and_compare_schema_are_checked(store: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="budget"):
        load_study_spec(write_study(tmp_path, SEARCH.replace("n_trials: 3\n", "")))
    with pytest.raises(ConfigError, match="variants"):
        load_study_spec(write_study(tmp_path, "type: compare\nseeds: [0]\n"))
    spec = load_study_spec(write_study(tmp_path, "type: compare\nvariants: {a: [optim.lr=0.01], b: []}\n"))
    assert spec.n_trials == 10 and spec.seeds == [0, 1, 2, 3, 4]  # 5 seeds by default


def test_command_line_run_keys_win_over_a_variants_own(store: str, tmp_path: Path) -> None:
    body = "type: compare\nseeds: [0]\nvariants: {long: [trainer.max_epochs=30, optim.lr=0.02], plain: []}\n"
    path = write_study(tmp_path, body)
    assert load_study_spec(path).run_config(variant="long").trainer.max_epochs == 30
    spec = load_study_spec(path, ["trainer.max_epochs=1"])
    for variant in ("long", "plain"):
        assert spec.run_config(variant=variant).trainer.max_epochs == 1
    assert spec.run_config(variant="long").optim.lr == 0.02  # the rest of the variant stays
    with pytest.raises(ConfigError, match="--set"):
        load_study_spec(write_study(tmp_path, body + "sets: [trainer.max_epochs=1]\n"))


def test_trials_skip_diagnostics_pngs_unless_the_study_asks(tmp_path: Path) -> None:
    spec = load_study_spec(write_study(tmp_path, SEARCH))
    cfg = spec.run_config({"optim.lr": 0.01, "data.batch_size": 32})
    assert cfg.tracking.diagnostics.enabled and not cfg.tracking.diagnostics.plots  # numbers yes, PNGs no
    assert not cfg.trainer.progress_bar and cfg.trainer.devices == 1
    asked = load_study_spec(write_study(tmp_path, SEARCH), ["run.tracking.diagnostics.plots=true"])
    assert asked.run_config({"optim.lr": 0.01, "data.batch_size": 32}).tracking.diagnostics.plots


def test_gpu_assignment_is_round_robin() -> None:
    assert assign_gpus(5, ["0", "1"]) == ["0", "1", "0", "1", "0"]
    assert assign_gpus(2, None) == [None, None]
    assert assign_gpus(3, ["0", "1", "2", "3"], per=2) == ["0,1", "2,3", "0,1"]  # DDP trials on 2 GPUs each
    assert assign_gpus(2, ["0"], per=2) == ["0", "0"]
    assert main(["study", "run", "x.yaml", "--gpus", "a,b"]) == 2


def test_samplers_and_pruners_are_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "samplers"]) == 0
    assert capsys.readouterr().out.split() == ["cmaes", "gp", "grid", "nsga2", "qmc", "random", "tpe"]
    assert main(["list", "pruners"]) == 0
    assert capsys.readouterr().out.split() == ["hyperband", "median", "none", "successive_halving"]


@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_study_files_are_valid(store: str, path: Path) -> None:
    spec = load_study_spec(path)
    assert spec.name == path.stem
    if spec.type == "search":  # a search selects hyperparameters: on validation data, never on test data
        assert not spec.select_on_test and not any(is_test_metric(o.metric) for o in spec.objectives)


def test_a_search_on_a_test_metric_is_refused_unless_the_file_says_so(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    on_test = write_study(tmp_path, SEARCH.replace("best_val_acc", "test_acc"))
    assert main(["study", "run", str(on_test), "--check"]) == 2
    err = capsys.readouterr().err
    assert "measured on the test set" in err and "optimistic" in err and "best_val_acc" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "mlruns").exists()
    allowed = write_study(tmp_path, SEARCH.replace("best_val_acc", "test_acc") + "select_on_test: true\n")
    assert main(["study", "run", str(allowed), "--check"]) == 0
    # The default objective of a search is validation accuracy; a compare study keeps test accuracy.
    assert (
        load_study_spec(write_study(tmp_path, SEARCH.replace("metric: best_val_acc\n", ""))).objectives[0].metric
        == "best_val_acc"
    )
    cmp = load_study_spec(write_study(tmp_path, "type: compare\nvariants: {a: [], b: [optim.lr=0.02]}\n"))
    assert cmp.objectives[0].metric == "test_acc"


@pytest.mark.parametrize(("metric", "study_type"), [("val_accuracy", "search"), ("test_acc_typo", "compare")])
def test_an_objective_no_run_produces_is_refused_before_anything_is_written(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], metric: str, study_type: str
) -> None:
    body = SEARCH if study_type == "search" else "type: compare\nvariants: {a: [], b: [optim.lr=0.02]}\n"
    path = write_study(tmp_path, body.replace("metric: best_val_acc\n", "") + f"metric: {metric}\n")
    for args in (["--check"], []):
        assert main(["study", "run", str(path), *args]) == 2
        err = capsys.readouterr().err
        assert f"objective metric {metric!r} is not produced" in err and "Traceback" not in err
    assert not (tmp_path / "mlruns").exists()  # no study, no run


def test_summary_names_cover_every_number_a_run_produces(store: str) -> None:
    # The objective check above is only as good as the producers' declarations: a real run says.
    cfg = load_config(str(CNN), [*TINY, "tracking.enabled=false"])
    result = train(cfg)
    assert set(result.metrics) <= summary_names(cfg), set(result.metrics) - summary_names(cfg)
    assert {"best_val_acc", "best_val_loss", "test_acc", "final_val_loss"} <= set(result.metrics)


# -- running ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_three_trial_study_end_to_end_then_resume(store: str, tmp_path: Path) -> None:
    path = write_study(tmp_path, SEARCH, name="e2e")
    assert main(["study", "run", str(path)]) == 0
    study = load("e2e")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    all_runs = runs(store, "e2e")
    children = [r for r in all_runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    assert len(all_runs) == 4 and len(children) == 3
    for t in study.trials:
        run = next(r for r in children if r.info.run_id == t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags[record.TRIAL] == str(t.number)
        assert run.data.tags[record.STATE] == "COMPLETE"
        assert run.data.tags[record.STUDY] == "e2e"
        assert float(run.data.params["optim.lr"]) == pytest.approx(t.params["optim.lr"])
        assert run.data.metrics["best_val_acc"] == pytest.approx(t.value)  # selected on validation data
        assert t.user_attrs["dlsuite.summary"]["test_acc"] == pytest.approx(run.data.metrics["test_acc"])
    client = mlflow.MlflowClient(store)
    assert client.get_run(parent_id).info.status == "FINISHED"
    attached = {a.path for a in client.list_artifacts(parent_id, "report")}
    for f in ("report.md", "optimization_history.png", "param_importances.png", "parallel_coordinate.png", "slice.png"):
        assert f"report/{f}" in attached
        assert (tmp_path / "mlruns" / "reports" / "e2e" / f).is_file()
    # The report names the validation metric the best trial was selected on and, apart, its test numbers.
    report = (tmp_path / "mlruns" / "reports" / "e2e" / "report.md").read_text()
    best = study.best_trial
    assert f"selected on best_val_acc = {best.value:.4g}" in report and "Selected on validation data" in report
    held_out = report.split("test (held out)")[1].split("## Trials")[0]
    assert f"test_acc={best.user_attrs['dlsuite.summary']['test_acc']:.4g}" in held_out

    # Resume with a larger budget: a trial is added, the first three stay as they were.
    before = [(t.number, t.value, t.params) for t in study.trials]
    assert main(["study", "run", str(path), "--set", "n_trials=4"]) == 0
    study = load("e2e")
    assert len(study.trials) == 4
    assert [(t.number, t.value, t.params) for t in study.trials[:3]] == before
    assert study.user_attrs["mlflow_parent_run_id"] == parent_id  # one parent run per study
    # Running it again with the budget met adds nothing.
    assert main(["study", "run", str(path), "--set", "n_trials=4"]) == 0
    assert len(load("e2e").trials) == 4
    assert len(runs(store, "e2e")) == 5
    assert [r["name"] for r in list_studies()] == ["e2e"] and list_studies()[0]["COMPLETE"] == 4


def test_nan_and_exception_trials_are_recorded_and_the_study_goes_on(store: str, tmp_path: Path) -> None:
    body = """space:
  optim.lr: [0.01, 1.0e+12]
  model.kernel_size: [3, 99]
n_trials: 3
"""
    path = write_study(tmp_path, body, name="bad")
    spec = load_study_spec(path, ["optim.name=sgd"])
    study = open_study(spec, resolve_storage())
    study.enqueue_trial({"optim.lr": 1e12, "model.kernel_size": 3})  # diverges to NaN
    study.enqueue_trial({"optim.lr": 0.01, "model.kernel_size": 99})  # the model raises when built
    study.enqueue_trial({"optim.lr": 0.01, "model.kernel_size": 3})
    run_study(spec)
    trials = load("bad").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert "diverged" in trials[0].user_attrs["fail_reason"]
    assert "Kernel size" in trials[1].user_attrs["fail_reason"]
    client = mlflow.MlflowClient(store)
    for t in trials[:2]:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FAILED" and run.data.tags[record.STATE] == "FAIL"
        assert run.data.tags["dlsuite.error"]


def test_pruned_trial_is_recorded_as_pruned_in_both(store: str, tmp_path: Path) -> None:
    body = """space:
  optim.lr: [0.01, 1.0e-7]
n_trials: 2
pruner: {name: median, n_startup_trials: 1, n_warmup_steps: 0}
"""
    spec = load_study_spec(write_study(tmp_path, body, name="prune"), ["trainer.max_epochs=4"])
    study = open_study(spec, resolve_storage())
    study.enqueue_trial({"optim.lr": 0.01})
    study.enqueue_trial({"optim.lr": 1e-7})  # learns nothing: below the median at the first epoch
    run_study(spec)
    first, second = load("prune").trials
    assert first.state == TrialState.COMPLETE and second.state == TrialState.PRUNED
    run = mlflow.MlflowClient(store).get_run(second.user_attrs["mlflow_run_id"])
    assert run.data.tags[record.STATE] == "PRUNED"
    assert run.data.metrics["epochs_trained"] < 4
    # the state shows in the runs table: in the name (tags are columns only on request); the run
    # itself ran to its (early) end, was tested and logged, so it is FINISHED, not KILLED
    assert run.info.run_name == f"prune-001 lr=1e-07 (pruned at epoch {int(run.data.metrics['epochs_trained']) - 1})"
    assert run.info.status == "FINISHED"


def test_compare_study_runs_each_variant_and_seed_and_reports_mean_std(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = "type: compare\nvariants:\n  adam: [optim.lr=0.01]\n  sgd: [optim.name=sgd, optim.lr=0.05]\nseeds: [0, 1]\n"
    path = write_study(tmp_path, body, name="cmp")
    assert main(["study", "run", str(path), "--set", "trainer.max_epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "(adam, seed 0) COMPLETE" in out and "(sgd, seed 1) COMPLETE" in out  # progress lines name them
    assert "viewStateShareKey=dlsuite-cmp" in out
    trials = load("cmp").trials
    assert sorted((t.params["variant"], t.params["seed"]) for t in trials) == [
        ("adam", 0),
        ("adam", 1),
        ("sgd", 0),
        ("sgd", 1),
    ]
    kids = [r for r in runs(store, "cmp") if record.VARIANT in r.data.tags]
    assert sorted((r.data.tags[record.VARIANT], r.data.tags[record.SEED], r.data.params["seed"]) for r in kids) == [
        ("adam", "0", "0"),
        ("adam", "1", "1"),
        ("sgd", "0", "0"),
        ("sgd", "1", "1"),
    ]
    capsys.readouterr()
    assert main(["study", "report", "cmp"]) == 0
    out = capsys.readouterr().out
    assert "per variant" in out and "mean" in out and "std" in out
    assert main(["study", "list"]) == 0
    assert "cmp" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_study_smoke_run(store: str, path: Path) -> None:
    # tune={}: the per-variant searches have their own test (test_compare_tuning.py)
    sets = [
        "n_trials=1",
        "seeds=[0]",
        "tune={}",
        "trainer.max_epochs=1",
        "data.train_samples=100",
        "tracking.plots=false",
        "tracking.diagnostics.enabled=false",  # tested on their own; per-layer hooks slow big backbones
    ]
    if "train_per_class" in path.read_text():  # few labels per class already keeps the run small
        sets.remove("data.train_samples=100")
    spec = load_study_spec(path, sets)
    result = run_study(spec)
    assert sum(result.counts.get(s, 0) for s in ("COMPLETE", "PRUNED")) == spec.n_trials


@pytest.mark.slow
def test_four_parallel_workers_reach_exactly_n_trials(store: str, tmp_path: Path) -> None:
    path = write_study(tmp_path, SEARCH.replace("n_trials: 3", "n_trials: 5"), name="par")
    spec = load_study_spec(path, ["trainer.max_epochs=1", "tracking.plots=false"])
    result = run_study(spec, workers=4)
    assert result.worker_codes == [0, 0, 0, 0]
    trials = load("par").trials
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(5))
    owners = {t.user_attrs["dlsuite.owner"] for t in trials}
    assert len(owners) >= 2  # the trials were shared between processes
    assert len([r for r in runs(store, "par") if record.TRIAL in r.data.tags]) == 5


def _wait_for(cond, timeout: float = 240.0) -> None:  # type: ignore[no-untyped-def]
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["study", "worker"])
def test_sigkill_mid_trial_then_resume_loses_nothing_and_leaves_nothing_running(
    store: str, tmp_path: Path, victim: str
) -> None:
    path = write_study(tmp_path, SEARCH.replace("n_trials: 3", "n_trials: 40"), name="kill")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "dlsuite",
        "study",
        "run",
        str(path),
        "--workers",
        "2",
        "--set",
        "tracking.plots=false",
    ]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    url = resolve_storage()
    try:

        def mid_trial() -> bool:
            if not Path(url).is_file() or "kill" not in optuna.study.get_all_study_names(open_storage(url)):
                return False
            ts = load("kill").trials
            done = any(t.state == TrialState.COMPLETE for t in ts)
            return done and any(t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs for t in ts)

        _wait_for(mid_trial)
        if victim == "study":
            os.killpg(proc.pid, signal.SIGKILL)  # the whole study: coordinator and both workers
        else:  # one worker mid-trial; the other worker and the coordinator go on
            victim_trial = next(
                t for t in load("kill").trials if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs
            )
            os.kill(int(victim_trial.user_attrs["dlsuite.owner"].rsplit(":", 2)[1]), signal.SIGKILL)
            # The surviving worker fails and re-queues the dead worker's trial before its next ask.
            _wait_for(lambda: load("kill").trials[victim_trial.number].state == TrialState.FAIL)
            os.killpg(proc.pid, signal.SIGKILL)  # then stop the rest (a long budget), as a user would
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = load("kill").trials
    finished = {t.number: (t.state, t.values) for t in before if t.state.is_finished()}
    running = [t for t in before if t.state == TrialState.RUNNING]
    assert finished and (running or victim == "worker")
    client = mlflow.MlflowClient(store)
    assert any(r.info.status == "RUNNING" for r in runs(store, "kill"))

    target = sum(1 for t in before if t.state.is_finished()) + 2
    spec = load_study_spec(path, [f"n_trials={target}", "tracking.plots=false"])
    run_study(spec)

    after = load("kill").trials
    assert {t.number: (t.state, t.values) for t in after if t.number in finished} == finished  # nothing lost
    assert not [t for t in after if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert not [r for r in runs(store, "kill") if r.info.status == "RUNNING"]
    for t in running:
        crashed = next(x for x in after if x.number == t.number)
        assert crashed.state == TrialState.FAIL and crashed.user_attrs["dlsuite.requeued"]
        assert "died" in crashed.user_attrs["fail_reason"]
        if "mlflow_run_id" in crashed.user_attrs:  # the other worker may have been killed before its run began
            run = client.get_run(crashed.user_attrs["mlflow_run_id"])
            assert run.info.status == "KILLED" and run.data.tags[record.STATE] == "FAIL"
        retry = [x for x in after if x.user_attrs.get("dlsuite.retry_of") == t.number]
        if t.params:  # re-queued with the same parameters
            assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == t.params
    assert victim == "worker" or any("mlflow_run_id" in after[t.number].user_attrs for t in running)
    if victim == "worker":
        crashed = after[victim_trial.number]
        assert crashed.user_attrs["dlsuite.requeued"] and "died" in crashed.user_attrs["fail_reason"]
        assert client.get_run(crashed.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    counted = [t for t in after if t.state.is_finished() and not t.user_attrs.get("dlsuite.requeued")]
    assert len(counted) == target
    parent = client.get_run(load("kill").user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FINISHED"


def test_conditional_key_is_sampled_only_when_its_condition_holds(store: str, tmp_path: Path) -> None:
    from dlsuite.hpo.study import suggest

    body = """space:
  optim.name: [sgd, adam]
  optim.momentum: {type: float, low: 0.5, high: 0.9, when: {optim.name: [sgd]}}
n_trials: 2
"""
    spec = load_study_spec(write_study(tmp_path, body, name="cond"))
    study = optuna.create_study()
    for name in ("sgd", "adam"):
        study.enqueue_trial({"optim.name": name})
        params = suggest(study.ask(), spec)
        assert ("optim.momentum" in params) == (name == "sgd")
        spec.run_config(params)  # adam without momentum is a valid config


def test_cmaes_is_usable_or_refused_naming_its_package(store: str, tmp_path: Path) -> None:
    import importlib.util

    path = write_study(tmp_path, SEARCH.replace("  data.batch_size: [32, 64]\n", "") + "sampler: cmaes\n")
    if importlib.util.find_spec("cmaes") is None:
        with pytest.raises(ConfigError, match="pip install cmaes"):
            load_study_spec(path)
    else:
        assert load_study_spec(path).sampler.name == "cmaes"


# -- GPU: run by a session with a lent GPU (`pytest -m gpu`); skipped with a reason elsewhere -----------
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class _CudaHog(nn.Module):
    """A linear classifier that, on a CUDA input, first asks for ``hog_gib`` GiB of device memory."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hog_gib: float) -> None:
        super().__init__()
        self.hog_gib = hog_gib
        self.head = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and self.hog_gib:
            torch.empty(int(self.hog_gib * 2**30), dtype=torch.uint8, device=x.device)  # more than any GPU has
        return self.head(x.flatten(1))


def _register_cuda_hog() -> None:
    # Registered by the GPU test alone, so that no other test's listing of models sees it.
    if "test_cuda_hog" in MODELS:
        return

    @register_model("test_cuda_hog")
    def _cuda_hog(
        input_shape: tuple[int, ...], num_classes: int, *, width: int = 8, depth: int = 3, hog_gib: float = 0.0
    ) -> nn.Module:
        """Test model: ``width`` and ``depth`` are accepted (the base config sets them) and unused."""
        return _CudaHog(input_shape, num_classes, hog_gib)


@pytest.mark.gpu
@needs_gpu
def test_cuda_oom_trial_is_recorded_and_the_study_goes_on(store: str, tmp_path: Path) -> None:
    _register_cuda_hog()
    body = "space:\n  model.hog_gib: [0.0, 100000.0]\nmetric: best_val_acc\nn_trials: 2\n"
    path = write_study(tmp_path, body, name="oom")
    spec = load_study_spec(path, ["model.name=test_cuda_hog", "trainer.accelerator=gpu"])
    study = open_study(spec, resolve_storage())
    study.enqueue_trial({"model.hog_gib": 100000.0})
    study.enqueue_trial({"model.hog_gib": 0.0})
    run_study(spec)
    trials = load("oom").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "CUDA out of memory" in trials[0].user_attrs["fail_reason"]
    run = mlflow.MlflowClient(store).get_run(trials[0].user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and "out of memory" in run.data.tags["dlsuite.error"]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.slow
def test_parallel_workers_share_a_gpu(store: str, tmp_path: Path) -> None:
    path = write_study(tmp_path, SEARCH.replace("n_trials: 3", "n_trials: 4"), name="gpus")
    spec = load_study_spec(path, ["trainer.max_epochs=1", "trainer.accelerator=gpu"])
    result = run_study(spec, workers=2, gpus=["0"])
    assert result.worker_codes == [0, 0]
    children = [r for r in runs(store, "gpus") if record.TRIAL in r.data.tags]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    # each worker saw exactly the one GPU it was pinned to
    devices = {r.data.params["env.device"] for r in children}
    assert all(d.startswith("cuda:") and d.endswith(" x1") for d in devices), devices


@pytest.mark.parametrize("metric", ["best_val_acc", "test_acc"])
def test_report_shows_the_selected_trials_validation_and_test_numbers_apart(metric: str) -> None:
    from optuna.distributions import FloatDistribution

    from dlsuite.reports.study import render

    study = optuna.create_study(study_name="r", direction="maximize")
    study.set_user_attr("dlsuite.metrics", [metric])
    for lr, val, test in [(0.01, 0.90, 0.88), (0.1, 0.80, 0.91)]:
        summary = {"best_val_acc": val, "final_val_loss": 0.3, "test_acc": test, "test_loss": 0.4}
        study.add_trial(
            optuna.trial.create_trial(
                value=summary[metric],
                params={"optim.lr": lr},
                distributions={"optim.lr": FloatDistribution(1e-3, 1.0, log=True)},
                user_attrs={"dlsuite.summary": summary},
            )
        )
    text = render(study)
    selected = text.split("test (held out)")[1].split("## Trials")[0]
    if metric == "best_val_acc":  # trial 0 wins on validation, though trial 1 tests better
        assert "Selected on validation data" in text and "\n0 " in selected
        assert "best_val_acc=0.9, final_val_loss=0.3" in selected and "test_acc=0.88, test_loss=0.4" in selected
    else:
        assert "optimistic estimate" in text and "\n1 " in selected and "test_acc=0.91" in selected
