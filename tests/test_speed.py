"""Fast paths train to the same accuracy band as the plain path, and the benchmark harness runs.

Nothing here asserts a speed: timings on a shared 2-core CPU mean nothing in a test. The harness
reports; these tests check that it and the fast paths keep working.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from mlflow import MlflowClient
from torch import nn

from benchmarks import bench
from dlsuite.build import components, load_run_config
from dlsuite.config import load_config
from dlsuite.data import create_datamodule
from dlsuite.errors import ConfigError
from dlsuite.models import create_model
from dlsuite.runner.run import train
from dlsuite.tasks import create_task
from dlsuite.techniques.speed import CudaGraphSteps, EpochTimer, prepare_model, resolve_precision, step_callbacks
from tests.conftest import tiny_config

# A tiny run that learns enough to compare: 5 epochs of 600 MNIST-1D sequences, Adam 1e-2.
LEARN = ["trainer.max_epochs=5", "data.train_samples=600", "optim.lr=1e-2", "tracking.enabled=false"]


def _acc(**kw: Any) -> tuple[float, dict[str, float]]:
    overrides = [*LEARN, *(f"{k}={v}" for k, v in kw.items())]
    result = train(tiny_config(*overrides))
    return result.metrics["test_acc"], result.metrics


def _plain_acc() -> float:
    """Test accuracy of the plain path (device-resident data, eager, fp32) on the tiny run."""
    acc, _ = _acc()
    assert acc > 0.25, "the tiny run must learn (chance is 0.10) for the bands to mean anything"
    return acc


@pytest.mark.slow
def test_dataloader_and_bf16_paths_same_band(store: str) -> None:
    plain_acc = _plain_acc()
    streamed, _ = _acc(**{"data.in_memory": "never"})
    assert abs(streamed - plain_acc) <= 0.08  # another shuffling order, the same learning
    bf16, _ = _acc(**{"trainer.precision": "bf16-mixed"})  # CPU autocast
    assert abs(bf16 - plain_acc) <= 0.08


@pytest.mark.slow
def test_compiled_same_band_and_compile_time_reported(store: str) -> None:
    # No validation split: one graph fewer to compile (train step and test forward remain).
    plain_acc, _ = _acc(**{"data.val_fraction": 0})
    acc, metrics = _acc(**{"trainer.compile": "true", "data.val_fraction": 0})
    assert abs(acc - plain_acc) <= 0.05  # same order of examples; only rounding differs
    assert metrics["compile_time_s"] >= 0.0


def test_compile_keeps_state_dict_keys() -> None:
    cfg = tiny_config("trainer.compile=true")
    model = create_model("cnn", (1, 40), 10, width=4)
    keys = list(model.state_dict())
    prepare_model(model, cfg.trainer)
    assert list(model.state_dict()) == keys  # checkpoints load into a plain model


def test_channels_last_same_result_on_images(store: str) -> None:
    # 2-D convs on the 8x8 digits: NHWC changes only the memory layout, not the numbers (beyond rounding).
    base = ["data.name=digits", "model.width=8", "model.depth=2", "data.train_samples=400", *LEARN[:1], *LEARN[2:]]
    plain = train(load_run_config(None, [*base, "trainer.progress_bar=false"]))
    fast = train(load_run_config(None, [*base, "trainer.progress_bar=false", "trainer.channels_last=true"]))
    assert abs(plain.metrics["test_acc"] - fast.metrics["test_acc"]) <= 0.03
    assert math.isclose(plain.metrics["final_train_loss"], fast.metrics["final_train_loss"], rel_tol=1e-3)
    conv = next(m for m in fast.task.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_cuda_graph_step_marks_only_for_reduce_overhead_on_gpu() -> None:
    # the trainer settings alone (unvalidated: this machine may have no GPU to validate against)
    graphs = load_config(
        None, ["trainer.compile=true", "trainer.compile_mode=reduce-overhead", "trainer.accelerator=gpu"]
    )
    assert [type(c) for c in step_callbacks(graphs.trainer)] == [CudaGraphSteps]
    assert step_callbacks(tiny_config("trainer.compile=true", "trainer.accelerator=cpu").trainer) == []


def test_precision_auto_is_fp32_without_gpu() -> None:
    cfg = tiny_config("trainer.precision=auto", "trainer.accelerator=cpu")
    assert resolve_precision(cfg.trainer) == "32-true"
    with pytest.raises(ConfigError, match="precision"):
        tiny_config("trainer.precision=bf16")


def test_device_side_sums_match_the_batches() -> None:
    cfg = tiny_config()
    task: Any = create_task(
        "classification", create_model("cnn", (1, 40), 10, width=4), components(cfg, (1, 40)), 10, (1, 40)
    )
    task.trainer = L.Trainer(accelerator="cpu", devices=1, logger=False)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(n, 10, generator=g), torch.randint(0, 10, (n,), generator=g)) for n in (7, 5)]
    losses = [nn.functional.cross_entropy(logits, y) for logits, y in batches]
    for (logits, y), loss in zip(batches, losses):
        task._add("train", loss, logits, y)
    assert isinstance(task._sums["train"]["n"], int)  # the count stays on the host: no copy per step
    means = task.take("train")
    correct = sum(int((logits.argmax(-1) == y).sum()) for logits, y in batches)
    assert means["train_loss"] == pytest.approx((7 * float(losses[0]) + 5 * float(losses[1])) / 12, rel=1e-6)
    assert means["train_acc"] == pytest.approx(correct / 12)
    assert task.take("train") == {}  # the sums were reset


def test_lean_hooks_store_plain_names_and_still_register_modules() -> None:
    parts = components(tiny_config(), (1, 40))
    task: Any = create_task("classification", create_model("cnn", (1, 40), 10, width=4), parts, 10, (1, 40))
    task._current_fx_name = "training_step"
    assert task.__dict__["_current_fx_name"] == "training_step"
    task.extra = nn.Linear(2, 2)
    assert "extra" in dict(task.named_children())


@pytest.mark.slow
def test_epoch_logging_is_batched_but_complete(store: str) -> None:
    result = train(tiny_config("trainer.max_epochs=4"))
    client = MlflowClient(store)
    history = client.get_metric_history(result.run_id, "train_loss")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]
    metrics = client.get_run(result.run_id).data.metrics
    assert 0.0 <= metrics["mlflow_log_fraction"] < 1.0
    assert metrics["steps_per_s"] > 0 and metrics["epoch_time_s"] > 0


def test_epoch_timer_counts_steps_after_the_first_epoch() -> None:
    timer = EpochTimer()
    timer.marks, timer.steps = [0.0, 2.0, 3.0, 4.0], [0, 10, 20, 30]
    expected = {"epoch_time_s": 1.0, "train_time_s": 4.0, "steps_per_s": 10.0, "compile_time_s": 1.0}
    assert timer.summary(compiled=True) == expected


def test_synthetic_dataset_shapes_and_bad_args(data_cache: Path) -> None:
    cfg = load_run_config(None, ["data.name=synthetic", "data.args={shape: [3, 8, 8], num_train: 50, num_test: 10}"])
    dm = create_datamodule(cfg.data)
    dm.prepare()
    assert dm.input_shape == (3, 8, 8) and dm.num_classes == 10
    assert len(dm.splits["test"][1]) == 10
    bad = load_run_config(None, ["data.name=synthetic", "data.args={shape: [0, 8]}"])
    with pytest.raises(ConfigError, match="shape"):
        create_datamodule(bad.data).prepare()


@pytest.mark.slow
def test_harness_tiny_mode_runs_every_recipe_and_mode(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    report = bench.main(["--tiny", "--repeats", "1", "--device", "cpu", "--json", str(out)])
    printed = capsys.readouterr().out
    for name in ("mnist1d_cnn", "resnet32", "lstm_mnist1d"):
        assert name in printed
    assert "dlsuite/hand" in printed and "torch " in printed and "repeats: 1" in printed
    for res in report["results"]:
        s = res["summary"]
        assert {"dlsuite", "hand", "lightning", "dlsuite/hand", "dlsuite/lightning"} <= set(s)
        assert all(s[m]["median"] > 0 for m in ("dlsuite", "hand", "lightning"))
        assert 0.0 <= s["mlflow_log_fraction"]["median"] < 1.0
    assert json.loads(out.read_text())["machine"]["torch"] == torch.__version__


def test_harness_refuses_unknown_recipe() -> None:
    with pytest.raises(SystemExit, match="recipes: mnist1d_cnn"):
        bench.main(["--recipes", "nope", "--tiny"])


@pytest.mark.slow
def test_study_benchmark_reports_trials_per_hour_and_overhead(store: str) -> None:
    assert bench.study_available()
    result = bench.bench_study("studies/quick.yaml", ["n_trials=2", "trainer.max_epochs=1"])
    assert result is not None and result["trials"] == 2 and result["trials_per_hour"] > 0
    # the overhead is the trial's time outside trainer.fit: positive, and less than the whole trial
    assert 0 < result["overhead_s_median"] < result["trial_s_median"]
    assert 0 < result["overhead_fraction"] < 1


# -- GPU paths: skipped with a reason where no CUDA device is present --------------------------------
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class _NoSyncInStep(Callback):
    """Make any host-device synchronisation from the forward and the loss an error."""

    def on_train_batch_start(self, *args: Any) -> None:
        torch.cuda.set_sync_debug_mode("error")

    def on_before_backward(self, *args: Any) -> None:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@needs_gpu
def test_gpu_training_step_never_syncs(store: str) -> None:
    try:
        result = train(tiny_config("trainer.accelerator=gpu", "trainer.devices=1"), callbacks=[_NoSyncInStep()])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert result.metrics["test_acc"] > 0


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize(
    "fast",
    [
        ["trainer.precision=bf16-mixed"],
        ["trainer.precision=auto", "trainer.channels_last=true"],
        ["trainer.compile=true", "trainer.compile_mode=reduce-overhead"],
    ],
)
def test_gpu_fast_paths_same_band(store: str, fast: list[str]) -> None:
    gpu = ["trainer.accelerator=gpu", "trainer.devices=1"]
    plain = train(tiny_config(*LEARN, *gpu)).metrics["test_acc"]
    acc = train(tiny_config(*LEARN, *gpu, *fast)).metrics["test_acc"]
    assert abs(acc - plain) <= 0.08
