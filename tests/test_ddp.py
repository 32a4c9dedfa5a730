"""Two-process DDP on CPU (gloo): trains, and records one MLflow run, not two; inside a study trial too."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from dlsuite.hpo.spec import load_study_spec
from dlsuite.hpo.storage import open_storage
from dlsuite.hpo.study import open_study
from dlsuite.tracking import record
from tests.conftest import TINY, cli_env, run_cli
from tests.test_multihost import pg_url, study_cli  # noqa: F401  pg_url: the fixture, a fresh PostgreSQL database

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


STUDY = """name: ddp
base: {base}
overrides: [{overrides}]
space:
  optim.lr: [0.01, 1.0e-7]
metric: best_val_acc
n_trials: 2
pruner: {{name: median, n_startup_trials: 1, n_warmup_steps: 0}}
"""
EPOCHS = 3


@pytest.mark.services
@pytest.mark.slow
def test_a_ddp_study_on_postgres_prunes_once_on_every_rank_and_records_one_run_per_trial(
    store: str,
    data_cache: Path,
    tmp_path: Path,
    pg_url: str,  # noqa: F811  the fixture imported above
) -> None:
    """Two trials trained by two CPU processes each (gloo): one completes; the other learns nothing
    (lr 1e-7), its rank 0 asks the pruner and both ranks stop after the same epoch, with no hang."""
    overrides = [*TINY, "data.args.val_samples=200", "tracking.plots=false"]
    overrides += ["tracking.log_checkpoint=false", "trainer.accelerator=cpu", "trainer.devices=2"]
    overrides += ["trainer.strategy=ddp"]
    path = tmp_path / "ddp.yaml"
    path.write_text(STUDY.format(base=REPO / "configs" / "mnist1d_cnn.yaml", overrides=", ".join(overrides)))
    study = open_study(load_study_spec(path), pg_url)
    study.enqueue_trial({"optim.lr": 0.01})
    study.enqueue_trial({"optim.lr": 1e-7})  # at chance level: below the first trial's median, pruned
    proc = study_cli([str(path), "--storage", pg_url], tmp_path, store, data_cache, EPOCHS, new_session=True)
    try:
        out = proc.communicate(timeout=600)[0]  # a rank that missed the decision would hang: fail, not wait
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, out[-3000:]
    done, pruned = optuna.load_study(study_name="ddp", storage=open_storage(pg_url)).trials
    assert (done.state, pruned.state) == (TrialState.COMPLETE, TrialState.PRUNED)
    c = MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name("ddp").experiment_id])
    children = {r.data.tags[record.TRIAL]: r for r in runs if record.TRIAL in r.data.tags}
    assert sorted(children) == ["0", "1"]  # one run per trial, not one per rank
    assert {r.info.status for r in runs} == {"FINISHED"}
    for t in (done, pruned):
        assert children[str(t.number)].info.run_id == t.user_attrs["mlflow_run_id"]
    run = children["0"].data
    assert run.metrics["epochs_trained"] == EPOCHS and done.values == [run.metrics["best_val_acc"]]
    assert 0.0 <= run.metrics["test_acc"] <= 1.0 and run.tags[record.STATE] == "COMPLETE"
    run = children["1"].data
    stopped = int(run.metrics["epochs_trained"])
    assert stopped < EPOCHS and run.tags[record.STATE] == "PRUNED"
    assert sorted(pruned.intermediate_values) == list(range(stopped))  # reported once per epoch, by rank 0
    # every rank of each trial stopped after the same epoch (each says so when its training ends)
    for number, epochs in ((0, EPOCHS), (1, stopped)):
        said = re.findall(rf"\[trial {number}\] DDP rank (\d) stopped after (\d+) epochs", out)
        assert sorted(said) == [("0", str(epochs)), ("1", str(epochs))], out[-3000:]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.devices=2", "trainer.strategy=ddp_spawn"], "needs trainer.strategy in ddp"),
        (["trainer.num_nodes=2", "trainer.strategy=ddp"], "one host"),
    ],
)
def test_a_study_refuses_ddp_it_cannot_run_per_trial(
    store: str, tmp_path: Path, overrides: list[str], expected: str
) -> None:
    from dlsuite.errors import ConfigError

    path = tmp_path / "ddp.yaml"
    path.write_text(STUDY.format(base=REPO / "configs" / "mnist1d_cnn.yaml", overrides=", ".join(TINY)))
    with pytest.raises(ConfigError, match=expected):
        load_study_spec(path, overrides)
