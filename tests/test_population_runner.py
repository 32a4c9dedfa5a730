"""The population runner behind the TrialRunner interface (real Optuna), and the grouping of configs."""

from __future__ import annotations

import math

import mlflow
import optuna
import pytest

from dlsuite.data import create_datamodule
from dlsuite.hpo.population import PopulationRunner
from dlsuite.hpo.runner import TrialContext
from dlsuite.population.group import describe, plan
from dlsuite.population.train import History, build_population, fit
from dlsuite.tracking import record
from tests.conftest import drop_a_sigint_at_step, tiny_config
from tests.test_population import sequential

SHARED = ["model.name=mlp", "model.width=16", "trainer.max_epochs=3", "optim.name=sgd", "optim.momentum=0.9"]
MEMBERS = [
    ["seed=1", "optim.lr=0.05"],
    ["seed=2", "optim.lr=0.01", "optim.weight_decay=0.01"],
    ["seed=3", "optim.lr=0.1", "optim.momentum=0.5"],
]


def _ctx(prune: bool, monitor: str = "val_acc") -> TrialContext:
    return TrialContext(parent_run_id=None, tags={}, prune=prune, monitor=monitor)


def test_each_trial_is_told_its_own_members_validation_accuracy_every_epoch(store: str) -> None:
    cfgs = [tiny_config(*SHARED, *m) for m in MEMBERS]
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trials = [study.ask() for _ in cfgs]
    outcomes = PopulationRunner().run_group(cfgs, trials, _ctx(prune=True))
    dm = create_datamodule(cfgs[0].data, 0)
    dm.prepare()
    one_example = 1.5 / len(dm.splits["val"][1])  # float rounding may flip a near-tie, no more
    finals = set()
    for cfg, trial, out in zip(cfgs, trials, outcomes, strict=True):
        assert out.state == "COMPLETE", out.reason
        accuracy: list[float] = []
        sequential(cfg, dm.splits["train"], dm.splits["val"], accuracy)  # the member alone, plain PyTorch
        reported = study._storage.get_trial(trial._trial_id).intermediate_values
        assert sorted(reported) == [0, 1, 2]
        assert [reported[e] for e in range(3)] == pytest.approx(accuracy, abs=one_example)
        assert out.metrics["best_val_acc"] == max(reported.values())
        assert out.metrics["final_val_acc"] == reported[2]
        finals.add(out.metrics["final_val_loss"])
    assert len(finals) == len(cfgs)  # each member its own numbers


def test_a_pruned_member_is_pruned_alone_at_its_epoch(store: str) -> None:
    cfgs = [tiny_config(*SHARED, *m) for m in MEMBERS]
    # A real Optuna pruner that prunes any member below 100% accuracy at its first report
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=1.01))
    trials = [study.ask() for _ in cfgs]
    outcomes = PopulationRunner().run_group(cfgs, trials, _ctx(prune=True))
    assert [o.state for o in outcomes] == ["PRUNED"] * 3
    assert {o.reason for o in outcomes} == {"pruned at epoch 0"}
    assert all(o.metrics["epochs_trained"] == 1 for o in outcomes)
    # without pruning the same group completes
    trials = [study.ask() for _ in cfgs]
    assert [o.state for o in PopulationRunner().run_group(cfgs, trials, _ctx(prune=False))] == ["COMPLETE"] * 3


def test_a_group_the_population_cannot_train_fails_with_the_reason(store: str) -> None:
    cfgs = [tiny_config(*SHARED, "regularization.mixup_alpha=0.2"), tiny_config(*SHARED)]
    study = optuna.create_study()
    outcomes = PopulationRunner().run_group(cfgs, [study.ask(), study.ask()], _ctx(prune=False))
    assert {o.state for o in outcomes} == {"FAIL"}
    assert "regularization.mixup_alpha=0.2 is not vectorised yet" in str(outcomes[0].reason)
    outcomes = PopulationRunner().run_group(cfgs[1:], [study.ask()], _ctx(prune=False, monitor="val_top5"))
    assert "cannot prune on 'val_top5'" in str(outcomes[0].reason)


def test_plan_groups_same_structure_configs_and_says_why_others_fall_back() -> None:
    cfgs = [
        tiny_config("seed=1"),
        tiny_config("seed=2", "optim.lr=0.1", "optim.weight_decay=0.01"),
        tiny_config("regularization.mixup_alpha=0.2"),
        tiny_config("model.width=16"),  # a shape knob: a structure of its own
        tiny_config("optim.name=rmsprop"),
        tiny_config("seed=5", "optim.schedule.name=cosine"),
        tiny_config("model.name=vgg"),
        tiny_config("model.name=mlp", "model.dropout=0.1"),
        tiny_config("model.name=mlp", "model.dropout=0.3", "seed=4"),  # dropout rate: per member
    ]
    groups = plan(cfgs)
    assert [(g.runner, g.members) for g in groups] == [
        ("population", [0, 1, 5]),
        ("sequential", [2]),
        ("sequential", [3]),
        ("sequential", [4]),
        ("sequential", [6]),
        ("population", [7, 8]),
    ]
    lines = describe(groups)
    assert "regularization.mixup_alpha=0.2 is not vectorised yet" in lines[1]
    assert "no other config shares its structure" in lines[2]
    assert "'rmsprop' is not vectorised" in lines[3]
    assert "model 'vgg' is not vectorised yet" in lines[4]
    assert [g.members for g in plan(cfgs[:2] + cfgs[5:6], max_size=2)] == [[0, 1], [2]]


def test_a_diverging_member_fails_alone(store: str) -> None:
    cfgs = [tiny_config(*SHARED, *MEMBERS[0]), tiny_config(*SHARED, "seed=9", "optim.lr=1e30")]
    study = optuna.create_study(direction="maximize")
    outcomes = PopulationRunner().run_group(cfgs, [study.ask(), study.ask()], _ctx(prune=True))
    assert outcomes[0].state == "COMPLETE"
    assert outcomes[1].state == "FAIL"
    assert outcomes[1].reason == "diverged: the loss is not finite at epoch 0"
    client = mlflow.MlflowClient(store)
    failed, finished = client.get_run(str(outcomes[1].run_id)), client.get_run(str(outcomes[0].run_id))
    assert failed.info.status == "FAILED" and "not finite" in failed.data.tags[record.ERROR]
    assert finished.info.status == "FINISHED" and "test_acc" in finished.data.metrics
    assert failed.data.tags[record.POPULATION] == finished.data.tags[record.POPULATION]


def test_members_left_out_of_a_population_leave_the_others_unchanged(store: str) -> None:
    cfgs = [tiny_config(*SHARED, *m) for m in MEMBERS]
    dm = create_datamodule(cfgs[0].data, 0)
    dm.prepare()
    train, val = dm.splits["train"], dm.splits["val"]
    full = fit(build_population(cfgs, dm.input_shape, 10), train, val)
    seen: list[int] = []

    def drop_member_1(epoch: int, hist: History) -> list[int]:
        seen.append(epoch)
        return [0, 2]

    part = fit(build_population(cfgs, dm.input_shape, 10), train, val, on_epoch=drop_member_1)
    assert seen == [0, 1, 2]
    for e in range(3):
        assert [part.val_loss[e][i] for i in (0, 2)] == pytest.approx([full.val_loss[e][i] for i in (0, 2)], abs=1e-6)
    assert part.val_loss[0][1] == full.val_loss[0][1]
    assert math.isnan(part.val_loss[1][1]) and math.isnan(part.train_loss[2][1])
    # none left: training stops
    assert len(fit(build_population(cfgs, dm.input_shape, 10), train, val, on_epoch=lambda e, h: []).val_loss) == 1


def test_a_signal_whose_exception_python_dropped_still_ends_every_member_killed(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlsuite.tracking.runs import Killed

    cfgs = [tiny_config(*SHARED, *m, "trainer.max_epochs=200", "tracking.experiment=dropped") for m in MEMBERS]
    study = optuna.create_study(direction="maximize")
    trials = [study.ask() for _ in cfgs]
    drop_a_sigint_at_step(monkeypatch, 3)
    with pytest.raises(Killed, match="SIGINT"):
        PopulationRunner().run_group(cfgs, trials, _ctx(prune=False))
    c = mlflow.MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name("dropped").experiment_id])
    assert len(runs) == len(cfgs)
    for run in runs:
        assert run.info.status == "KILLED" and "SIGINT" in run.data.tags[record.ERROR]
        assert len(c.get_metric_history(run.info.run_id, "train_loss")) <= 1  # stopped at once, not after 200 epochs
