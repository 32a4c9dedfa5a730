"""End-to-end tracked runs: what every run records in MLflow, determinism, failure status."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from dlsuite.runner.run import TrainingDiverged, train
from tests.conftest import tiny_config
from tests.fake_data import make_image_folder, make_mnist


def _artifacts(c: MlflowClient, run_id: str) -> set[str]:
    out = set()
    for a in c.list_artifacts(run_id):
        if a.is_dir:
            out |= {b.path for b in c.list_artifacts(run_id, a.path)}
        else:
            out.add(a.path)
    return out


def test_a_run_records_everything_in_mlflow(store: str) -> None:
    result = train(tiny_config("tracking.experiment=e2e", "trainer.max_epochs=3"))
    c = MlflowClient(store)
    run = c.get_run(result.run_id)
    assert run.info.status == "FINISHED" and result.status == "FINISHED"
    p, m, tags = run.data.params, run.data.metrics, run.data.tags
    assert p["optim.lr"] == "0.001" and p["model.width"] == "8" and p["data.train_samples"] == "300"
    assert int(p["model.num_params"]) > 0 and "env.torch" in p and "env.git_commit" in p and "env.device" in p
    assert tags["dlsuite.dataset"] == "mnist1d" and tags["dlsuite.model"] == "cnn"
    for key in ("test_acc", "test_loss", "test_f1", "best_val_acc", "best_epoch", "num_params"):
        assert key in m, key
    for key in ("train_loss", "val_loss", "train_acc", "val_acc", "gap_acc", "gap_loss", "lr"):
        hist = c.get_metric_history(result.run_id, key)
        assert [h.step for h in hist] == [0, 1, 2], key  # one value per epoch
    gaps = [h.value for h in c.get_metric_history(result.run_id, "gap_acc")]
    assert gaps == pytest.approx([r["train_acc"] - r["val_acc"] for r in result.history])
    assert _artifacts(c, result.run_id) == {
        "config.yaml",
        "plots/learning_curves.png",
        "plots/confusion_matrix.png",
        "checkpoints/best.ckpt",
        "plots/gradient_flow.png",  # the diagnostics, on by default
        "plots/activations.png",
        "plots/weights.png",
        "plots/overfitting.png",
    }
    assert (Path("mlruns") / "mlflow.db").is_file()  # the default-style store, in the test's temp cwd


def test_checkpoint_loads_weights_only_and_rebuilds_the_model(store: str, tmp_path: Path) -> None:
    from dlsuite.data import create_datamodule
    from dlsuite.models import create_model

    cfg = tiny_config()
    result = train(cfg)
    path = MlflowClient(store).download_artifacts(result.run_id, "checkpoints/best.ckpt", str(tmp_path))
    ckpt = torch.load(path, weights_only=True)
    hp = ckpt["hyper_parameters"]
    model = create_model(hp["config"]["model"]["name"], tuple(hp["input_shape"]), hp["num_classes"], width=8)
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    # the run tested the best checkpoint: the reloaded model is the tested one, weight for weight...
    tested = result.task.model.state_dict()
    assert state.keys() == tested.keys()
    assert all(torch.equal(state[k].cpu(), tested[k].cpu()) for k in state)
    # ...and gives the logged test accuracy on the test split
    dm = create_datamodule(cfg.data, cfg.seed)
    dm.prepare()
    x, y = dm.splits["test"]
    with torch.no_grad():
        acc = float((model.eval()(x).argmax(-1) == y).float().mean())
    logged = MlflowClient(store).get_run(result.run_id).data.metrics["test_acc"]
    assert len(y) > 0 and acc == pytest.approx(logged, abs=1e-6)


def test_same_seed_same_metrics(store: str) -> None:
    a = train(tiny_config("tracking.enabled=false"))
    b = train(tiny_config("tracking.enabled=false"))
    c = train(tiny_config("tracking.enabled=false", "seed=1"))
    assert a.history == b.history and a.metrics["test_acc"] == b.metrics["test_acc"]
    assert a.history != c.history


def test_digits_run(store: str) -> None:
    result = train(
        tiny_config(
            "data.name=digits",
            "data.train_samples=null",
            "model.first_kernel_size=3",
            "optim.lr=1e-2",
            "trainer.max_epochs=4",
        )
    )
    assert result.status == "FINISHED" and result.metrics["test_acc"] > 0.2


def test_torchvision_format_run(store: str, tmp_path: Path) -> None:
    make_mnist(tmp_path / "d")
    result = train(
        tiny_config(f"data.root={tmp_path / 'd'}", "data.name=mnist", "data.train_samples=null", "data.download=false")
    )
    assert result.status == "FINISHED"


def test_image_folder_run(store: str, tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "imgs")
    result = train(
        tiny_config(f"data.root={root}", "data.name=image_folder", "data.image_size=12", "data.train_samples=null")
    )
    assert result.status == "FINISHED" and result.metrics["num_params"] > 0


def test_image_folder_with_its_own_val_folder_trains_on_those_splits(store: str, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_image_folder(root / "train", per_class=8)
    make_image_folder(root / "val", per_class=3)
    make_image_folder(root / "test", per_class=2)
    cfg = tiny_config(
        f"data.root={root}",
        "data.name=image_folder",
        "data.image_size=8",
        "data.train_samples=null",
        "trainer.max_epochs=1",
    )
    result = train(cfg)
    assert result.status == "FINISHED" and result.task.num_classes == 3
    params = MlflowClient(store).get_run(result.run_id).data.params
    assert (params["data.n_train"], params["data.n_val"], params["data.n_test"]) == ("24", "9", "6")
    assert "val_acc" in result.history[0] and 0.0 <= result.metrics["best_val_acc"] <= 1.0


def test_mlp_and_schedules_and_sgd(store: str) -> None:
    result = train(
        tiny_config(
            "model.name=mlp",
            "model.width=16",
            "model.width=null",
            "optim.name=sgd",
            "optim.momentum=0.9",
            "optim.nesterov=true",
            "optim.schedule.name=step",
            "optim.schedule.step_size=1",
            "optim.schedule.gamma=0.5",
        )
    )
    lrs = [r["lr"] for r in result.history]
    assert lrs == pytest.approx([1e-3, 5e-4])  # lr logged per epoch, after the epoch's step


def test_divergence_ends_the_run_failed_with_a_reason(store: str) -> None:
    with pytest.raises(TrainingDiverged, match="diverged"):
        train(tiny_config("optim.name=sgd", "optim.lr=1e12", "tracking.experiment=div"))
    c = MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name("div").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "diverged" in runs[0].data.tags["dlsuite.error"]
