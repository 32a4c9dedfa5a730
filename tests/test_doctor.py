"""``dlsuite doctor``: real over- and underfitting runs are told apart, the remedies fit the verdict,
and the written study loads with every variant's config valid."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from dlsuite.build import load_run_config
from dlsuite.cli import main
from dlsuite.hpo.spec import load_study_spec
from dlsuite.reports.doctor import diagnose, diagnose_run, remedy_study, write_remedy_study
from dlsuite.runner.run import train
from tests.conftest import tiny_config

OVERFIT_REMEDIES = {
    "dropout",
    "weight_decay",
    "l2_penalty",
    "mixup",
    "label_smoothing",
    "early_stopping",
    "smaller_model",
    "more_data",
}
CAPACITY_REMEDIES = {"bigger_model", "longer_training", "higher_lr"}


def _epochs(
    train_acc: list[float], val_acc: list[float], val_loss: list[float] | None = None
) -> list[dict[str, float]]:
    val_loss = val_loss or [1.0] * len(train_acc)
    return [
        {"epoch": float(i), "train_acc": t, "val_acc": v, "train_loss": 1.0 - t / 2, "val_loss": vl}
        for i, (t, v, vl) in enumerate(zip(train_acc, val_acc, val_loss))
    ]


@pytest.mark.slow  # one 40-epoch run: ~15 s alone, longer on a shared 2-core CPU
def test_overfitting_run_gets_overfitting_remedies(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 100 training sequences and a 64-channel CNN at a high learning rate: memorised within a few epochs
    cfg = tiny_config(
        "data.train_samples=100",
        "model.width=64",
        "optim.lr=1e-2",
        "trainer.max_epochs=40",
        "tracking.log_checkpoint=false",
        "tracking.plots=false",
    )
    result = train(cfg)
    d = diagnose_run(result.run_id)
    assert d.verdict == "overfitting", d.evidence
    assert any("gap" in e for e in d.evidence)
    assert set(d.variants) == OVERFIT_REMEDIES
    assert d.variants["smaller_model"] == ["model.width=32"]
    assert d.variants["more_data"] == ["data.train_samples=200"]
    assert not set(d.variants) & CAPACITY_REMEDIES

    out = tmp_path / "remedies.yaml"
    assert main(["doctor", result.run_id, "--out", str(out), "--seeds", "3"]) == 0
    printed = capsys.readouterr().out
    assert "OVERFITTING" in printed and "remedy study written" in printed
    n = len(OVERFIT_REMEDIES) + 1
    assert f"it costs {3 * n} runs ({n} variants x 3 seeds), about " in printed  # time from the run's own
    assert main(["doctor", result.run_id, "--seeds", "2"]) == 0  # default: beside the study's report
    name = f"doctor_{result.run_id[:8]}"
    assert (Path("mlruns") / "reports" / name / f"{name}.yaml").is_file() and not list(Path.cwd().glob("doctor_*.yaml"))
    spec = load_study_spec(out)  # the doctor's study loads through the one study schema
    configs = {v: spec.run_config(variant=v) for v in spec.variants}
    assert spec.seeds == [0, 1, 2] and set(configs) == {"baseline", *OVERFIT_REMEDIES}
    assert configs["baseline"].model.knobs["width"] == 64 and configs["baseline"].data.train_samples == 100
    assert configs["dropout"].model.knobs["dropout"] == 0.3
    assert configs["weight_decay"].optim.name == "adamw" and configs["weight_decay"].optim.weight_decay == 0.01
    es = configs["early_stopping"].regularization.early_stopping
    assert es is not None and es.monitor == "val_loss" and es.patience == 8
    assert configs["label_smoothing"].regularization.label_smoothing == 0.1
    assert "# written by `dlsuite doctor" in out.read_text()


def test_underfitting_run_gets_capacity_remedies_and_gradients_are_read(store: str, tmp_path: Path) -> None:
    # a tiny learning rate for 2 epochs: the model is left near chance
    cfg = tiny_config(
        "optim.lr=1e-5", "model.dropout=0.2", "tracking.log_checkpoint=false", "tracking.diagnostics.enabled=false"
    )
    result = train(cfg)
    d = diagnose_run(result.run_id)
    assert d.verdict == "underfitting", d.evidence
    assert CAPACITY_REMEDIES <= set(d.variants) and not set(d.variants) & OVERFIT_REMEDIES
    assert d.variants["higher_lr"] == ["optim.lr=0.0001"]
    assert d.variants["bigger_model"] == ["model.width=16"]
    assert d.variants["less_regularization"] == ["model.dropout=0.0"]
    assert "grad_norm_ratio" not in d.numbers  # no gradient diagnostics logged: handled

    # gradient diagnostics as the diagnostics callback logs them (per-epoch metrics on the run)
    c = MlflowClient(store)
    for step, (first, last) in enumerate([(1e-4, 0.5), (1e-5, 0.5)]):
        c.log_metric(result.run_id, "grad_norm/features.0", first, step=step)
        c.log_metric(result.run_id, "grad_norm/head.1", last, step=step)
    c.log_metric(result.run_id, "grad_norm_ratio", 2e-5, step=1)
    d = diagnose_run(result.run_id)
    assert d.numbers["grad_norm_ratio"] == pytest.approx(2e-5)
    assert any("vanishing gradients" in e for e in d.evidence)
    assert {"batch_norm", "kaiming_init"} <= set(d.variants)

    path = write_remedy_study(d, tmp_path / "u.yaml", seeds=2)
    spec = load_study_spec(path)
    configs = {v: spec.run_config(variant=v) for v in spec.variants}
    assert configs["batch_norm"].model.knobs["norm"] == "batch"
    assert configs["longer_training"].trainer.max_epochs == 4


def test_doctor_refuses_unknown_and_unfinished_runs(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "f" * 32]) == 2
    assert "no run" in capsys.readouterr().err
    from dlsuite.tracking import store as st

    c = MlflowClient(store)
    running = c.create_run(st.experiment_id(c, "x")).info.run_id
    assert main(["doctor", running]) == 2
    assert "RUNNING" in capsys.readouterr().err
    c.set_terminated(running)
    assert main(["doctor", running]) == 2  # finished, but not a dlsuite run
    assert "no config.yaml" in capsys.readouterr().err
    assert list(Path.cwd().glob("doctor_*.yaml")) == []


def test_rules_on_synthetic_histories() -> None:
    cfg = load_run_config(None, ["model.name=mlp", "model.activation=sigmoid", "data.train_samples=200"])
    # overfitting shown by the validation loss alone (accuracy gap small)
    d = diagnose(_epochs([0.9] * 10, [0.88] * 10, [1.0, 0.8, 0.6, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0]), cfg)
    assert d.verdict == "overfitting" and any("turned up" in e for e in d.evidence)
    assert d.variants["smaller_model"] == ["model.width=50"]
    # good fit: high train accuracy, small gap, flat validation loss -> nothing to remedy
    good = diagnose(_epochs([0.5, 0.8, 0.95, 0.97, 0.97, 0.97], [0.5, 0.78, 0.93, 0.95, 0.95, 0.95]), cfg)
    assert good.verdict == "good fit" and good.variants == {}
    # a linear model that cannot fit: an MLP is proposed
    lin = load_run_config(None, ["model.name=linear", "model.width=null"])
    d = diagnose(_epochs([0.3] * 6, [0.29] * 6), lin)
    assert d.verdict == "underfitting" and d.variants["bigger_model"] == ["model.name=mlp"]
    # exploding gradients and saturated sigmoids propose clipping and ReLU
    d = diagnose(
        _epochs([0.3] * 6, [0.29] * 6), cfg, {"grad_norm/0": [1.0, 5e4]}, {"saturation_mean": 0.8}, run_id="abc"
    )
    assert {"grad_clip", "lower_lr", "relu"} <= set(d.variants)
    study = remedy_study(d, seeds=5)
    assert study["variants"]["baseline"] == [] and study["seeds"] == [0, 1, 2, 3, 4] and study["name"] == "doctor_abc"
