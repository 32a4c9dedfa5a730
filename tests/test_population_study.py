"""Studies with populations (``study run --population P``): real Optuna journal storage, real MLflow store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
import torch
from optuna.trial import TrialState
from torchmetrics.functional.classification import multiclass_f1_score

from dlsuite.cli import main
from dlsuite.hpo.batch import ask_batch, run_batch
from dlsuite.hpo.runner import RUN_ID_ATTR, TrainRunner
from dlsuite.hpo.spec import load_study_spec
from dlsuite.hpo.storage import open_storage, resolve_storage
from dlsuite.hpo.study import open_parent_run, run_study
from dlsuite.population.metrics import confusion, macro_f1
from dlsuite.tracking import record
from tests.test_multihost import pg_url  # noqa: F401  the PostgreSQL fixture
from tests.test_studies import _wait_for, load, runs, write_study

SPACE = """space:
  optim.lr: {type: float, low: 1e-3, high: 3e-2, log: true}
  optim.weight_decay: {type: float, low: 1e-5, high: 1e-2, log: true}
sampler: {name: tpe, n_startup_trials: 2}
n_trials: 8
"""


def _keys(run: mlflow.entities.Run) -> tuple[set[str], set[str], set[str]]:
    return set(run.data.params), set(run.data.metrics), set(run.data.tags) - {record.POPULATION}


def test_macro_f1_and_accuracy_agree_with_torchmetrics() -> None:
    gen = torch.Generator().manual_seed(0)
    logits, y = torch.randn(3, 50, 5, generator=gen), torch.randint(0, 4, (50,), generator=gen)  # class 4 absent
    f1 = macro_f1(confusion(logits, y))
    for p in range(3):
        expected = multiclass_f1_score(logits[p], y, num_classes=5, average="macro")
        assert float(f1[p]) == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.slow
def test_a_population_study_records_every_member_as_a_sequential_trial_is_recorded(store: str, tmp_path: Path) -> None:
    # ~40 s on the 2-core CPU: 8 trials as two populations of 4, then one sequential trial to compare with
    spec = load_study_spec(write_study(tmp_path, SPACE, name="pop"), ["population=4", "tracking.plots=true"])
    result = run_study(spec)
    assert result.counts == {"COMPLETE": 8}
    study = load("pop")
    client = mlflow.MlflowClient(store)
    members = {}
    for t in study.trials:
        run = client.get_run(t.user_attrs[RUN_ID_ATTR])  # trial -> run
        assert run.data.tags[record.TRIAL] == str(t.number)  # run -> trial
        assert run.info.status == "FINISHED" and run.data.tags[record.STATE] == "COMPLETE"
        assert run.data.tags[record.PARENT] == result.parent_run_id
        assert run.data.metrics["best_val_acc"] == t.value
        assert {"test_acc", "test_loss", "test_f1"} <= set(run.data.metrics)
        assert float(run.data.params["optim.lr"]) == pytest.approx(t.params["optim.lr"])
        members[t.number] = run
    assert len({r.data.tags[record.POPULATION] for r in members.values()}) == 2  # two populations of 4
    assert len({r.data.params["optim.lr"] for r in members.values()}) == 8  # the liar kept the batch diverse

    seq = load_study_spec(
        write_study(tmp_path, SPACE.replace("n_trials: 8", "n_trials: 1"), name="seq"), ["tracking.plots=true"]
    )
    run_study(seq)
    (alone,) = [r for r in runs(store, "seq") if record.TRIAL in r.data.tags]
    assert record.POPULATION not in alone.data.tags
    member = members[0]
    assert _keys(member) == _keys(alone)
    for name in ("train_loss", "val_acc", "lr", "gap_acc", "grad_norm_ratio", "dead_relu_mean", "test_acc"):
        steps = [m.step for m in client.get_metric_history(member.info.run_id, name)]
        assert steps == [m.step for m in client.get_metric_history(alone.info.run_id, name)], name
    artifacts = {a.path for a in client.list_artifacts(member.info.run_id, "plots")}
    assert artifacts == {a.path for a in client.list_artifacts(alone.info.run_id, "plots")}
    assert {i.dataset.name for i in member.inputs.dataset_inputs} == {"mnist1d"}
    assert 0 <= member.data.metrics["mlflow_log_fraction"] < 1


class _PruneOddTrials(optuna.pruners.BasePruner):
    """A real Optuna pruner (the extension API) that prunes odd-numbered trials at their first report."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number % 2 == 1


def test_members_are_pruned_alone_and_their_runs_end_tested(store: str, tmp_path: Path) -> None:
    spec = load_study_spec(
        write_study(tmp_path, SPACE + "pruner: median\n", name="prune"), ["population=4", "trainer.max_epochs=3"]
    )
    study = optuna.create_study(
        study_name="prune", storage=open_storage(resolve_storage()), direction="maximize", pruner=_PruneOddTrials()
    )
    client = mlflow.MlflowClient(store)
    parent = open_parent_run(spec, study, client)
    outcomes = run_batch(study, ask_batch(study, 4), spec, parent, TrainRunner(), client)
    assert [o.state for o in outcomes] == ["COMPLETE", "PRUNED", "COMPLETE", "PRUNED"]
    for t in load("prune").trials:
        run = client.get_run(t.user_attrs[RUN_ID_ATTR])
        assert run.info.status == "FINISHED" and "test_acc" in run.data.metrics
        epochs = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        if t.number % 2:
            assert t.state == TrialState.PRUNED and epochs == [0]
            assert run.info.run_name.endswith("(pruned at epoch 0)") and run.data.tags[record.STATE] == "PRUNED"
        else:
            assert t.state == TrialState.COMPLETE and epochs == [0, 1, 2]


def test_check_says_which_runner_each_group_uses(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = SPACE.replace("sampler:", "  data.batch_size: [32, 64]\n  optim.name: [adam, rmsprop]\nsampler:")
    path = write_study(tmp_path, body, name="chk")
    assert main(["study", "run", str(path), "--check", "--population", "8"]) == 0
    out = capsys.readouterr().out
    assert "varies within a population: optim.lr, optim.weight_decay" in out
    assert (
        "structure-determining (trials differing here train in separate populations): data.batch_size, optim.name"
        in out
    )
    assert "sequential when optim.name=rmsprop: optimizer 'rmsprop' is not vectorised" in out
    assert main(["study", "run", str(path), "--check"]) == 0
    assert "runner: sequential, one trial at a time" in capsys.readouterr().out
    cmp = write_study(
        tmp_path,
        "type: compare\nseeds: [0, 1]\nvariants:\n  none: []\n  l2: [regularization.l2=1e-3]\n"
        "  mixup: [regularization.mixup_alpha=0.2]\n  wide: [model.width=16]\npopulation: 8\n",
        name="cmpchk",
    )
    assert main(["study", "run", str(cmp), "--check"]) == 0
    out = capsys.readouterr().out
    assert "population: none, l2 (4 trials trained together)" in out and "population: wide (2 trials" in out
    assert "sequential: mixup (2 trials, one at a time: regularization.mixup_alpha=0.2 is not vectorised yet)" in out
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "four"])
def test_a_bad_population_is_refused_with_exit_2_and_nothing_written(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    path = write_study(tmp_path, SPACE, name="bad")
    with pytest.raises(SystemExit) as exc:  # argparse refuses what is not a whole number
        raise SystemExit(main(["study", "run", str(path), f"--population={value}"]))
    assert exc.value.code == 2
    assert "--population" in capsys.readouterr().err
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.slow
def test_a_compare_study_trains_compatible_variants_together(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        "type: compare\nseeds: [0, 1]\npopulation: 8\nvariants:\n  none: []\n"
        "  mixup: [regularization.mixup_alpha=0.2]\n  l2: [regularization.l2=1e-3]\n"
    )
    path = write_study(tmp_path, body, name="cmppop")
    assert main(["study", "run", str(path), "--set", "trainer.max_epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "one population of 4" in out and "runs alone: regularization.mixup_alpha=0.2 is not vectorised yet" in out
    kids = [r for r in runs(store, "cmppop") if record.VARIANT in r.data.tags]
    pops = {(r.data.tags[record.VARIANT], r.data.tags[record.SEED]): r.data.tags.get(record.POPULATION) for r in kids}
    assert len(pops) == 6 and pops[("mixup", "0")] is None and pops[("mixup", "1")] is None
    assert len({pops[("none", "0")], pops[("none", "1")], pops[("l2", "0")], pops[("l2", "1")]}) == 1
    assert main(["study", "report", "cmppop"]) == 0
    assert "per variant" in capsys.readouterr().out


@pytest.mark.slow
def test_sigkill_mid_population_loses_nothing_and_leaves_nothing_running(store: str, tmp_path: Path) -> None:
    path = write_study(tmp_path, SPACE.replace("n_trials: 8", "n_trials: 40"), name="popkill")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "dlsuite", "study", "run", str(path), "--population", "4"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL)

    def mid_population() -> bool:  # a population of 4 training, after at least one finished trial
        storage = resolve_storage()
        started = Path(storage).is_file() and "popkill" in optuna.study.get_all_study_names(open_storage(storage))
        states = [(t.state, RUN_ID_ATTR in t.user_attrs) for t in (load("popkill").trials if started else [])]
        return (TrialState.COMPLETE, True) in states and states.count((TrialState.RUNNING, True)) == 4

    try:
        _wait_for(mid_population)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = load("popkill").trials
    finished = {t.number: (t.state, t.values) for t in before if t.state.is_finished()}
    running = [t for t in before if t.state == TrialState.RUNNING]
    assert len(running) == 4 and all(t.user_attrs.get("dlsuite.owner") for t in running)
    target = len(finished) + 4
    run_study(load_study_spec(path, [f"n_trials={target}", "population=4"]))  # the suite started again
    after = load("popkill").trials
    assert {r.info.status for r in runs(store, "popkill")} == {"FINISHED", "KILLED"}  # none RUNNING
    assert {t.state for t in after} <= {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL}
    assert finished == {t.number: (t.state, t.values) for t in after if t.number in finished}  # nothing lost
    client = mlflow.MlflowClient(store)
    for t in running:
        crashed = after[t.number]
        assert crashed.state == TrialState.FAIL and crashed.user_attrs["dlsuite.requeued"]
        run = client.get_run(crashed.user_attrs[RUN_ID_ATTR])
        assert run.info.status == "KILLED" and run.data.tags[record.STATE] == "FAIL"
        retry = [x for x in after if x.user_attrs.get("dlsuite.retry_of") == t.number]
        assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == t.params
    assert sum(1 for t in after if t.state.is_finished() and not t.user_attrs.get("dlsuite.requeued")) == target


@pytest.mark.slow
@pytest.mark.services
def test_every_member_keeps_its_lease_on_postgresql(
    store: str,
    tmp_path: Path,
    pg_url: str,  # noqa: F811  the fixture imported from tests.test_multihost
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two workers, a population of 4 each, leases of 4 s (a heartbeat a second): while one worker
    trains, the other recovers stale trials before each look at the budget. A member without a
    heartbeat would be failed and re-queued after 4 s; every member must finish as itself."""
    monkeypatch.setenv("DLSUITE_STUDY_LEASE_S", "4")
    path = write_study(tmp_path, SPACE, name="poplease")
    sets = ["population=4", "trainer.max_epochs=8", "data.train_samples=1000", f"storage={pg_url}"]
    spec = load_study_spec(path, sets)  # training outlasts a 4 s lease several times over
    result = run_study(spec, workers=2)
    assert result.counts == {"COMPLETE": 8}
    trials = optuna.load_study(study_name="poplease", storage=open_storage(pg_url)).trials
    assert not [t for t in trials if t.user_attrs.get("dlsuite.requeued")]
    assert len({t.user_attrs["dlsuite.owner"] for t in trials}) == 2  # both workers trained a population
    pops = {r.data.tags[record.POPULATION] for r in runs(store, "poplease") if record.TRIAL in r.data.tags}
    assert len(pops) == 2
