"""Zoo runs end to end: cost facts, the seq2seq and reconstruction tasks, the digit-sequence data,
and every shipped ``configs/models/*.yaml`` training one fast step (tiny widths via overrides)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from dlsuite.build import load_run_config
from dlsuite.cli import main
from dlsuite.config import DataConfig
from dlsuite.data import create_datamodule
from dlsuite.errors import ConfigError
from dlsuite.models import MODELS, create_model, list_models
from dlsuite.models.api import Preset, model_knobs
from dlsuite.models.cost import model_cost, trace_conv_stack
from dlsuite.runner.run import train
from dlsuite.runner.summary import summary_names

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "models").glob("*.yaml"))
QUIET = ["trainer.progress_bar=false", "tracking.enabled=false"]


# -- cost facts -------------------------------------------------------------------------------
def test_cost_of_the_paper_cnn_matches_the_hand_computation() -> None:
    model = create_model("cnn", (1, 40), 10)  # kernels 5, 3, 3; stride 2; padding 1
    facts = model_cost(model, torch.zeros(1, 1, 40))
    # (N + 2P - F) / S + 1: (40 + 2 - 5) // 2 + 1 = 19, (19 + 2 - 3) // 2 + 1 = 10, then 5
    assert facts["model.output_sizes"] == "40 > 19 > 10 > 5"
    # receptive field 1 + (5-1)*1 + (3-1)*2 + (3-1)*4 = 17
    assert facts["model.receptive_field"] == 17
    assert facts["model.feature_size"] == "5" and facts["model.conv_layers"] == 3
    # FLOPs: 2 * (out positions * out ch * in ch * kernel) per conv + 2 * linear in * out
    convs = 2 * (19 * 25 * 1 * 5 + 10 * 25 * 25 * 3 + 5 * 25 * 25 * 3)
    assert facts["model.flops_per_example"] == convs + 2 * 125 * 10
    assert facts["model.num_params"] == sum(p.numel() for p in model.parameters())


def test_trace_follows_the_output_size_formula_in_2d() -> None:
    model = create_model("vgg", (1, 9, 9), 3, width=4, stages=3, depth=1)
    for row in trace_conv_stack(model, torch.zeros(1, 1, 9, 9)):
        for n, k, s, p, out in zip(row["in_size"], row["kernel"], row["stride"], row["padding"], row["out_size"]):
            assert out == (n + 2 * p - k) // s + 1


def test_depthwise_separable_is_cheaper_than_plain_convolution() -> None:
    x = torch.zeros(1, 1, 16, 16)
    mobile = model_cost(create_model("mobilenet", (1, 16, 16), 3, width=16, stages=2, depth=2), x)
    vgg = model_cost(create_model("vgg", (1, 16, 16), 3, width=32, stages=2, depth=2), x)
    assert mobile["model.flops_per_example"] < vgg["model.flops_per_example"] / 2


def test_recurrent_and_attention_models_have_flops_but_no_receptive_field() -> None:
    for name in ("lstm", "gru", "rnn", "transformer"):
        facts = model_cost(create_model(name, (1, 40), 10), torch.zeros(1, 1, 40))
        # an LSTM step is ~8 * hidden * (in + hidden) FLOPs; fused kernels must not hide them
        assert facts["model.flops_per_example"] > 100_000, name
        assert "model.receptive_field" not in facts


def test_squeeze_excitation_keeps_the_conv_receptive_field() -> None:
    x = torch.zeros(1, 1, 40)
    rf = [model_cost(create_model(n, (1, 40), 3, width=8), x)["model.receptive_field"] for n in ("resnet", "senet")]
    assert rf[0] == rf[1] > 17


# -- data and tasks ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("op", "check"),
    [
        ("reverse", lambda x, y: torch.equal(y, x.flip(-1))),
        ("sort", lambda x, y: torch.equal(y, x.sort(-1).values)),
        ("copy", torch.equal),
    ],
)
def test_digit_sequences(op: str, check) -> None:  # type: ignore[no-untyped-def]
    dm = create_datamodule(DataConfig(name="digit_sequences", args={"op": op, "length": 5, "num_train": 50}))
    dm.prepare()
    x, y = dm.splits["train"]
    assert x.shape == (50, 5) and x.dtype == torch.long and check(x, y)
    assert dm.input_shape == (5,) and dm.num_classes == 10
    assert len(dm.splits["val"][0]) == 500 and len(dm.splits["test"][0]) == 1000
    # the split seed fixes the data; another seed gives other sequences
    again = create_datamodule(DataConfig(name="digit_sequences", args={"op": op, "length": 5, "num_train": 50}))
    again.prepare()
    assert torch.equal(again.splits["test"][0], dm.splits["test"][0])


def test_digit_sequences_refuses_unknown_op() -> None:
    dm = create_datamodule(DataConfig(name="digit_sequences", args={"op": "shuffle"}))
    with pytest.raises(ConfigError, match="op must be one of reverse, sort, copy"):
        dm.prepare()


@pytest.mark.slow  # ~30-40 s on a loaded 2-core CPU (data generation, MLflow store)
def test_seq2seq_learns_to_reverse(store: str) -> None:
    cfg = load_run_config(
        ROOT / "configs" / "models" / "attention_seq2seq.yaml",
        [*QUIET, "trainer.max_epochs=3", "data.args.length=5", "data.args.num_train=2000", "optim.lr=1e-2"],
    )
    result = train(cfg)
    assert {"test_loss", "test_acc", "test_seq_acc"} <= set(result.metrics)
    assert {"train_loss", "train_acc", "val_acc", "val_seq_acc", "gap_acc", "lr"} <= set(result.history[-1])
    # chance is 10% per token; a few epochs with attention are far above it
    assert result.metrics["test_acc"] > 0.5
    assert 0.0 <= result.metrics["test_seq_acc"] <= result.metrics["test_acc"]
    assert set(result.metrics) <= summary_names(cfg)  # what a study objective may name


@pytest.mark.slow  # ~30-40 s on a loaded 2-core CPU (data generation, MLflow store)
def test_reconstruction_trains_a_vae(store: str) -> None:
    cfg = load_run_config(
        ROOT / "configs" / "models" / "autoencoder.yaml",
        [*QUIET, "trainer.max_epochs=2", "data.train_samples=400", "model.variational=true", "model.width=4"],
    )
    result = train(cfg)
    assert result.metrics["test_kl"] > 0
    assert result.metrics["test_loss"] == pytest.approx(
        result.metrics["test_mse"] + result.metrics["test_kl"], rel=1e-4
    )
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < first["train_loss"]
    names = summary_names(cfg)  # what a study objective may name: no accuracy for a reconstruction
    assert set(result.metrics) <= names and "best_val_acc" not in names and "best_val_loss" in names


def test_reconstruction_logs_the_learning_rate_each_epoch_trained_with(store: str) -> None:
    cfg = load_run_config(
        ROOT / "configs" / "models" / "autoencoder.yaml",
        [
            *QUIET,
            "trainer.max_epochs=2",
            "data.train_samples=200",
            "model.width=4",
            "optim.lr=1e-3",
            "optim.schedule.name=step",
            "optim.schedule.step_size=1",
            "optim.schedule.gamma=0.5",
            "tracking.enabled=false",
        ],
    )
    result = train(cfg)
    assert [r["lr"] for r in result.history] == pytest.approx([1e-3, 5e-4])  # not the next epoch's


def test_reconstruction_refuses_a_metric_it_does_not_log() -> None:
    # refused by validation, so --check and the run agree and nothing is written
    with pytest.raises(ConfigError, match=r"checkpoint_monitor='val_acc': task 'reconstruction' logs no such metric"):
        load_run_config(
            ROOT / "configs" / "models" / "autoencoder.yaml", [*QUIET, "trainer.checkpoint_monitor=val_acc"]
        )
    with pytest.raises(ConfigError, match=r"'val_loss' is better lower: set trainer.checkpoint_mode=min"):
        load_run_config(ROOT / "configs" / "models" / "autoencoder.yaml", [*QUIET, "trainer.checkpoint_mode=max"])


@pytest.mark.parametrize(
    ("task", "model", "fits"),
    [
        ("seq2seq", "gru", "attention_seq2seq"),
        ("reconstruction", "cnn", "autoencoder"),
        ("classification", "autoencoder", "alexnet"),
    ],
)
def test_a_task_refuses_a_model_that_does_not_fit(task: str, model: str, fits: str) -> None:
    monitor = ["trainer.checkpoint_monitor=val_loss", "trainer.checkpoint_mode=min"] if task != "classification" else []
    with pytest.raises(ConfigError, match=rf"task '{task}' needs a model that outputs .*'{model}' does not.*{fits}"):
        load_run_config(None, [f"task.name={task}", f"model.name={model}", *monitor])


# -- shipped configs --------------------------------------------------------------------------
def test_one_config_per_family() -> None:
    families = {p.stem for p in CONFIGS}
    zoo = {n for n in list_models() if MODELS.get(n).__module__.startswith("dlsuite.models.")}
    presets = {n for n in zoo if isinstance(MODELS.get(n), Preset)}  # linear, mnist1d_*: names within a family
    assert families == zoo - presets
    for path in CONFIGS:
        assert load_run_config(path).model.name == path.stem


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_trains_one_step(path: Path, store: str) -> None:
    cfg = load_run_config(path)
    knobs = model_knobs(cfg.model.name)
    tiny = [f"model.{k}={v}" for k, v in {"width": 8, "hidden": 8, "growth_rate": 4}.items() if k in knobs]
    if "val_samples" in cfg.data.args:
        tiny.append("data.args.val_samples=100")
    overrides = [*QUIET, *tiny, "trainer.max_epochs=1", "data.batch_size=32", "data.train_samples=32"]
    result = train(load_run_config(path, overrides))
    assert len(result.history) == 1
    assert result.metrics["flops_per_example"] > 0 and result.metrics["num_params"] > 0
    assert all(v == v for v in result.metrics.values()), "NaN in the run's metrics"


@pytest.mark.slow  # ~30-40 s on a loaded 2-core CPU (data generation, MLflow store)
def test_cost_facts_are_logged_to_mlflow(store: str) -> None:
    cfg = load_run_config(
        ROOT / "configs" / "models" / "cnn.yaml",
        ["trainer.progress_bar=false", "trainer.max_epochs=1", "data.train_samples=100", "data.args.val_samples=100"],
    )
    result = train(cfg)
    run = MlflowClient(store).get_run(result.run_id)
    assert run.data.params["model.output_sizes"] == "40 > 19 > 10 > 5"
    assert run.data.params["model.receptive_field"] == "17"
    assert run.data.metrics["receptive_field"] == 17
    assert run.data.metrics["flops_per_example"] == float(run.data.params["model.flops_per_example"]) > 0


def test_cli_lists_the_zoo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "models", "*net"]) == 0
    assert capsys.readouterr().out.split() == ["alexnet", "densenet", "lenet", "mobilenet", "resnet", "senet"]
    assert main(["list", "tasks"]) == 0
    assert {"classification", "seq2seq", "reconstruction"} <= set(capsys.readouterr().out.split())


def test_cli_wrong_input_form_exits_2(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", str(ROOT / "configs" / "models" / "cnn.yaml"), "--set", "model.name=attention_seq2seq"])
    # cnn's knobs are not seq2seq's: refused at validation, before anything is written
    assert code == 2
    assert "does not take knob 'depth'" in capsys.readouterr().err
    assert not Path("mlruns").exists()
