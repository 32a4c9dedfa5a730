"""Techniques through real training runs: tiny MNIST-1D models, real Lightning and MLflow in a temp store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import pytest
import torch
from lightning.pytorch.callbacks import Callback, EMAWeightAveraging, StochasticWeightAveraging

from dlsuite.build import load_run_config
from dlsuite.cli import main
from dlsuite.data import create_datamodule
from dlsuite.models import apply_init, create_model
from dlsuite.runner.finders import tune_batch_size, tune_lr
from dlsuite.runner.protocols import mean_history
from dlsuite.runner.run import TrainingDiverged, train
from dlsuite.runner.summary import summary_names

from .conftest import TINY, tiny_config

DEMOS = Path(__file__).resolve().parent.parent / "configs" / "demos"
TINY_MLP = [o for o in TINY if not o.startswith("model.")] + ["model.name=mlp"]
QUIET = ["tracking.plots=false", "tracking.log_checkpoint=false"]
# Runs whose MLflow record is not under test skip tracking: creating each temporary store costs seconds.
UNTRACKED = ["tracking.enabled=false"]


class Probe(Callback):
    """Keeps the trainer's callbacks as they were at the end of fit."""

    def __init__(self) -> None:
        self.callbacks: list[Callback] = []

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.callbacks = list(trainer.callbacks)  # type: ignore[arg-type]


def _client(store: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=store)


def _runs(store: str) -> list[Any]:
    c = _client(store)
    exp = c.get_experiment_by_name("dlsuite")
    return c.search_runs([exp.experiment_id]) if exp else []


def _initial_weights(cfg: Any) -> list[torch.Tensor]:
    # The same order of seeding and building as train(), so these are the run's initial weights.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = create_datamodule(cfg.data, cfg.seed)
    dm.prepare()
    model = create_model(cfg.model.name, dm.input_shape, dm.num_classes, **cfg.model.knobs)
    apply_init(model, cfg.model.init, cfg.model.init_std)
    return [p.detach().clone() for p in model.parameters()]


def _moved(cfg: Any) -> float:
    start = _initial_weights(cfg)
    res = train(cfg)
    return sum(float((a - b.detach().cpu()).norm()) for a, b in zip(start, res.task.model.parameters()))


@pytest.mark.slow
def test_gradient_clipping_by_value_and_norm_limits_the_updates(store: str) -> None:
    base = ["tracking.enabled=false", "trainer.max_epochs=1", "optim.name=sgd", "optim.lr=0.5"]
    free = _moved(tiny_config(*base))
    by_value = _moved(tiny_config(*base, "optim.grad_clip=1e-6", "optim.grad_clip_method=value"))
    by_norm = _moved(tiny_config(*base, "optim.grad_clip=1e-6", "optim.grad_clip_method=norm"))
    assert free > 0.1
    assert by_value < free * 1e-3 and by_norm < free * 1e-3


def test_augmentation_touches_training_batches_only(store: str) -> None:
    cfg = tiny_config(
        *UNTRACKED,
        "trainer.max_epochs=1",
        "trainer.test_checkpoint=last",
        "data.augment=[{name: gaussian_noise, std: 30}]",
    )
    seen: list[float] = []

    class Spy(Callback):
        # Appended after the noise: records the spread of what the training step receives.
        def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            pl_module.objective.augment.transforms.append(lambda x: seen.append(float(x.std())) or x)

    res = train(cfg, callbacks=[Spy()])
    row = res.history[-1]
    # The logged validation loss is the loss of the final model on the raw validation data...
    dm = create_datamodule(cfg.data, cfg.seed)
    dm.prepare()
    x, y = dm.splits["val"]
    task = res.task.cpu().eval()
    with torch.no_grad():
        val_loss = float(task.loss_fn(task(x), y))
    assert val_loss == pytest.approx(row["val_loss"], rel=1e-4)
    # ...while each of the 6 training steps (300 examples, batch 50) saw inputs drowned in noise.
    assert len(seen) == 6 and min(seen) > 20


def test_early_stopping_stops_early(store: str) -> None:
    res = train(
        tiny_config(
            *UNTRACKED,
            "trainer.max_epochs=8",
            "regularization.early_stopping={monitor: val_loss, patience: 1, min_delta: 100}",
        )
    )
    assert res.metrics["epochs_trained"] == 2  # the first epoch sets the best, the second fails to beat it by 100


def test_swa_averages_the_weights_that_are_tested(store: str) -> None:
    probe = Probe()
    res = train(
        tiny_config(
            *UNTRACKED,
            "trainer.max_epochs=3",
            "model.norm=batch",
            "regularization.swa={epoch_start: 1, annealing_epochs: 1}",
        ),
        callbacks=[probe],
    )
    swa = next(c for c in probe.callbacks if isinstance(c, StochasticWeightAveraging))
    avg = swa._average_model
    assert avg is not None and int(swa.n_averaged) >= 2  # type: ignore[attr-defined]
    for a, b in zip(avg.parameters(), res.task.parameters()):
        assert torch.allclose(a.cpu(), b.cpu())
    assert res.status == "FINISHED" and "test_acc" in res.metrics


def test_ema_keeps_a_moving_average(store: str) -> None:
    probe = Probe()
    res = train(tiny_config(*UNTRACKED, "trainer.max_epochs=2", "regularization.ema={decay: 0.9}"), callbacks=[probe])
    ema = next(c for c in probe.callbacks if isinstance(c, EMAWeightAveraging))
    assert ema._average_model is not None and int(ema._average_model.n_averaged) >= 6
    assert res.status == "FINISHED"


@pytest.mark.slow
def test_snapshot_ensemble_is_tested_and_logged(store: str) -> None:
    cfg = tiny_config(
        *QUIET,
        "trainer.max_epochs=2",
        "optim.schedule.name=cosine_restarts",
        "optim.schedule.restart_epochs=1",
        "regularization.ensemble={method: snapshot, members: 2}",
    )
    res = train(cfg)
    assert res.metrics["ensemble_members"] == 2 and 0 <= res.metrics["ensemble_test_acc"] <= 1
    logged = _client(store).get_run(res.run_id).data.metrics
    assert "ensemble_test_acc" in logged


@pytest.mark.slow
def test_kfold_makes_one_child_per_fold_and_records_mean_and_std(store: str) -> None:
    res = train(tiny_config(*QUIET, "trainer.max_epochs=1", "data.folds=3"))
    runs = _runs(store)
    parent = next(r for r in runs if r.info.run_id == res.run_id)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == res.run_id]
    assert len(children) == 3 and sorted(r.data.tags["dlsuite.fold"] for r in children) == ["0", "1", "2"]
    assert sorted(r.data.params["data.fold"] for r in children) == ["0", "1", "2"]
    m = parent.data.metrics
    assert {"cv_best_val_acc_mean", "cv_best_val_acc_std", "cv_test_acc_mean", "cv_test_acc_std"} <= set(m)
    folds = [m[f"fold{i}_best_val_acc"] for i in range(3)]
    assert m["cv_best_val_acc_mean"] == pytest.approx(sum(folds) / 3)
    assert parent.info.status == "FINISHED" and parent.data.tags["dlsuite.protocol"] == "kfold"
    cfg = tiny_config(*QUIET, "trainer.max_epochs=1", "data.folds=3")
    assert set(res.metrics) <= summary_names(cfg), set(res.metrics) - summary_names(cfg)


@pytest.mark.slow
def test_bagging_trains_members_on_bootstrap_samples(store: str) -> None:
    res = train(tiny_config(*QUIET, "trainer.max_epochs=2", "regularization.ensemble={method: bagging, members: 2}"))
    runs = _runs(store)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == res.run_id]
    assert sorted(r.data.params["data.bootstrap_seed"] for r in children) == ["0", "1"]
    assert sorted(r.data.params["seed"] for r in children) == ["0", "1"]
    assert res.metrics["ensemble_members"] == 2 and 0 <= res.metrics["ensemble_test_acc"] <= 1
    client = _client(store)
    assert "ensemble_test_acc" in client.get_run(res.run_id).data.metrics
    # The parent carries the members' mean curves and final gap, so reports treat it like one run.
    gaps = [client.get_run(c.info.run_id).data.metrics["final_gap_acc"] for c in children]
    assert res.metrics["final_gap_acc"] == pytest.approx(sum(gaps) / 2)
    history = client.get_metric_history(res.run_id, "gap_acc")
    assert sorted(m.step for m in history) == [0, 1] and [r["epoch"] for r in res.history] == [0.0, 1.0]
    assert res.metrics["test_acc"] == res.metrics["ensemble_test_acc"]  # the ensemble's own figure wins
    # ... and so does its validation accuracy, what a search selects on; the members' mean has its own name.
    assert res.metrics["best_val_acc"] == res.metrics["ensemble_val_acc"] and 0 <= res.metrics["ensemble_val_acc"] <= 1
    member_val = [client.get_run(c.info.run_id).data.metrics["best_val_acc"] for c in children]
    assert res.metrics["member_best_val_acc_mean"] == pytest.approx(sum(member_val) / 2)
    cfg = tiny_config(*QUIET, "trainer.max_epochs=2", "regularization.ensemble={method: bagging, members: 2}")
    assert set(res.metrics) <= summary_names(cfg), set(res.metrics) - summary_names(cfg)


def test_mean_history_keeps_the_epochs_and_numbers_every_member_has() -> None:
    a = [{"epoch": 0.0, "val_acc": 0.5, "lr": 0.1}, {"epoch": 1.0, "val_acc": 0.7}]
    b = [{"epoch": 0.0, "val_acc": 0.3}]  # stopped early, no lr recorded
    assert mean_history([a, b]) == [{"epoch": 0.0, "val_acc": pytest.approx(0.4)}]
    assert mean_history([]) == []


def test_diagnostics_are_logged_with_plots(store: str) -> None:
    res = train(tiny_config("trainer.max_epochs=2", "tracking.log_checkpoint=false"))
    c = _client(store)
    m = c.get_run(res.run_id).data.metrics
    for key in ("grad_norm/features.0", "grad_norm/head.1", "grad_norm_ratio", "dead_relu_mean", "weight_sparsity"):
        assert key in m, key
    assert len(c.get_metric_history(res.run_id, "grad_norm/features.0")) == 2  # one value per epoch
    plots = {Path(a.path).name for a in c.list_artifacts(res.run_id, "plots")}
    assert {"gradient_flow.png", "activations.png", "weights.png", "overfitting.png"} <= plots


class HookCount(Callback):
    """Counts the forward hooks on the model inside each training step (after its forward)."""

    def __init__(self) -> None:
        self.per_step: list[int] = []
        self.model: torch.nn.Module | None = None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self.model = pl_module
        self.per_step.append(sum(len(m._forward_hooks) for m in pl_module.modules()))


def test_diagnostics_hook_activations_only_on_sampled_steps() -> None:
    # 300 examples in batches of 50: 6 steps an epoch, sampled at steps 0 and 4 of each epoch.
    probe = HookCount()
    res = train(tiny_config(*UNTRACKED, "tracking.diagnostics.every_n_steps=4"), callbacks=[probe])
    relus = sum(isinstance(m, torch.nn.ReLU) for m in res.task.modules())
    assert relus > 0 and probe.per_step == [relus, 0, 0, 0, relus, 0] * 2
    assert probe.model is not None and all(not m._forward_hooks for m in probe.model.modules())  # none left
    diag = next(c for c in res.task.trainer.callbacks if type(c).__name__ == "Diagnostics")
    assert [r["epoch"] for r in diag.history] == [0.0, 1.0] and 0 <= diag.history[0]["dead_relu_mean"] <= 1


def test_diagnostics_see_saturation_and_penalties_and_can_be_off(store: str) -> None:
    sig = [*TINY_MLP, "model.activation=sigmoid", "model.depth=3", "model.width=16", "trainer.max_epochs=1"]
    res = train(load_run_config(None, [*QUIET, *sig, "regularization.l1=1e-3", "regularization.mixup_alpha=0.2"]))
    m = _client(store).get_run(res.run_id).data.metrics
    assert "saturation/blocks.0.2" in m and "saturation_mean" in m and m["penalty"] > 0
    off = train(load_run_config(None, [*QUIET, *sig, "tracking.diagnostics.enabled=false"]))
    assert not any(k.startswith("grad_norm") for k in _client(store).get_run(off.run_id).data.metrics)


def test_divergence_stops_with_failed_status_and_reason(store: str) -> None:
    cfg = tiny_config(*QUIET, "trainer.max_epochs=1", "optim.name=sgd", "optim.lr=1e12", "model.init=normal")
    with pytest.raises(TrainingDiverged, match="diverged"):
        train(cfg)
    run = _runs(store)[0]
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["dlsuite.error"]


@pytest.mark.slow
def test_lbfgs_and_plateau_warmup_train(store: str) -> None:
    res = train(
        tiny_config(
            *UNTRACKED,
            "trainer.max_epochs=3",
            "optim.name=lbfgs",
            "optim.lr=0.1",
            "optim.schedule.name=plateau",
            "optim.schedule.warmup_epochs=2",
            "optim.schedule.warmup_start=0.5",
        )
    )
    assert [round(r["lr"], 4) for r in res.history] == [0.05, 0.075, 0.1]
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


def test_learning_rate_finder_logs_curve_and_suggestion(store: str) -> None:
    cfg = tiny_config("trainer.max_epochs=5")
    result = tune_lr(cfg, min_lr=1e-4, max_lr=1.0, num_training=15)
    assert len(result.curve["lr"]) >= 10 and result.curve["lr"][0] < result.curve["lr"][-1]
    # The raw losses, recovered from Lightning's smoothed curve, start near ln(10) (10 classes, lr 1e-4),
    # while the smoothed curve starts at about half of that (its bias correction is one step off).
    raw, smoothed = result.curve["raw_loss"], result.curve["loss"]
    assert abs(raw[0] - 2.303) < 0.4 and smoothed[0] < 0.6 * raw[0]
    run = _client(store).get_run(result.run_id)
    assert run.data.params["tune.lr_suggestion"] == str(result.suggestion)
    assert [a.path for a in _client(store).list_artifacts(result.run_id, "plots")] == ["plots/lr_finder.png"]


def test_batch_size_finder_logs_curve_and_suggestion(store: str) -> None:
    cfg = tiny_config()
    result = tune_batch_size(cfg, init_val=16, max_trials=3, steps_per_trial=3)
    assert result.suggestion == 64  # 16 -> 32 -> 64: three trials, no memory limit on 300 examples
    assert cfg.data.batch_size == 50  # the config is left as it was
    run = _client(store).get_run(result.run_id)
    assert run.data.params["tune.batch_size_suggestion"] == "64"
    assert [a.path for a in _client(store).list_artifacts(result.run_id, "plots")] == ["plots/batch_size_finder.png"]


def test_tune_cli(store: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_config().to_yaml())
    assert main(["find-lr", str(cfg), "--num-training", "10", "--min-lr", "1e-3"]) == 0
    assert "suggested learning rate" in capsys.readouterr().out
    assert main(["find-lr", str(cfg), "--min-lr", "1", "--max-lr", "0.1"]) == 2
    assert main(["find-batch-size", str(cfg), "--set", "optim.name=nope"]) == 2
    assert "unknown optimizer 'nope'" in capsys.readouterr().err


def test_cli_train_reports_divergence(store: str, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_config(*QUIET, "trainer.max_epochs=1", "optim.name=sgd", "optim.lr=1e12").to_yaml())
    assert main(["train", str(cfg)]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(DEMOS.glob("*.yaml")), ids=lambda p: p.stem)
def test_demo_config_runs(store: str, path: Path) -> None:
    cfg = load_run_config(
        path,
        [
            "trainer.max_epochs=1",
            "trainer.progress_bar=false",
            "data.train_samples=200",
            "data.args.val_samples=100",
            *UNTRACKED,
        ],
    )
    try:
        res = train(cfg)
    except TrainingDiverged:
        assert "lr_too_large" in path.stem  # only the demo of a too-large learning rate may blow up
        return
    assert res.status == "FINISHED"
