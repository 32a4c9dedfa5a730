"""Two-process DDP on CPU (gloo): trains, and records one MLflow run, not two."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import TINY, cli_env, run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_ddp_records_one_run(store: str, data_cache: Path, tmp_path: Path) -> None:
    args = [
        "train",
        str(REPO / "configs" / "mnist1d_cnn.yaml"),
        "--set",
        *TINY,
        "tracking.experiment=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
    ]
    proc = run_cli(args, cli_env(store, data_cache), tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert [h.step for h in c.get_metric_history(run.info.run_id, "train_loss")] == [0, 1]
    assert 0.0 <= run.data.metrics["test_acc"] <= 1.0
    assert run.data.params["trainer.strategy"] == "ddp"
