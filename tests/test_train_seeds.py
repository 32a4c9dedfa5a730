"""``dlsuite train --seeds``: one population (or sequential runs, saying why), one parent, one child per seed.

The children must read like plain ``dlsuite train`` runs (same metric names, steps and param keys, and
for seed 0 the same numbers), the parent's mean and interval must follow from the children's numbers,
bad ``--seeds`` must write nothing, and a ``kill -9`` must leave nothing RUNNING for the next command.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from scipy import stats as sps

from dlsuite.cli import main
from dlsuite.errors import ConfigError
from dlsuite.runner.seeds import parse_seeds
from dlsuite.tracking import record
from tests.conftest import TINY, cli_env, drop_a_sigint_at_step, run_cli

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "mnist1d_cnn.yaml")
# Per-layer diagnostics are not vectorised (documented); both sides go without them.
SET = [*TINY, "tracking.diagnostics.enabled=false"]


def _runs(c: MlflowClient, experiment: str) -> list:  # type: ignore[type-arg]
    exp = c.get_experiment_by_name(experiment)
    return [] if exp is None else c.search_runs([exp.experiment_id])


def test_parse_seeds_ranges_lists_and_refusals() -> None:
    assert parse_seeds("0-9") == list(range(10))
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("0-2, 10") == [0, 1, 2, 10]
    for bad, says in [
        ("5", "one seed"),
        ("3-1", "downwards"),
        ("0,1,0", "named twice"),
        ("a", "not a seed"),
        ("0-", "not a seed"),
        ("", "not a seed"),
        ("0-5000", "at most"),
    ]:
        with pytest.raises(ConfigError, match=says):
            parse_seeds(bad)


def test_seeds_train_as_one_population_with_children_like_plain_runs(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # ~25 s on the 2-core CPU: a plain run and a population of 4, 2 epochs each
    assert main(["train", CONFIG, "--set", *SET, "tracking.experiment=plain"]) == 0
    assert main(["train", CONFIG, "--seeds", "0-3", "--set", *SET, "tracking.experiment=seeds"]) == 0
    out = capsys.readouterr().out
    c = MlflowClient(store)
    (plain,) = _runs(c, "plain")
    runs = _runs(c, "seeds")
    (parent,) = [r for r in runs if record.SEEDS in r.data.tags]
    children = sorted((r for r in runs if r is not parent), key=lambda r: int(r.data.tags[record.SEED]))
    assert parent.data.tags[record.SEEDS] == "0,1,2,3" and parent.data.tags[record.SEEDS_RUNNER] == "population"
    assert parent.data.params["seed"] == "0-3" and parent.info.status == "FINISHED"
    assert [r.data.tags[record.SEED] for r in children] == ["0", "1", "2", "3"]
    for r in children:
        assert r.info.status == "FINISHED" and r.data.tags[record.PARENT] == parent.info.run_id
        assert r.data.tags[record.POPULATION] == parent.info.run_id and record.OWNER in r.data.tags
        assert set(r.data.metrics) == set(plain.data.metrics)
        assert set(r.data.params) == set(plain.data.params) and r.data.params["seed"] == r.data.tags[record.SEED]
        assert set(plain.data.tags) - {record.OVERRIDES_TAG} <= set(r.data.tags)
        for key in ("train_acc", "val_loss", "val_f1", "lr"):
            steps = [m.step for m in c.get_metric_history(r.info.run_id, key)]
            assert steps == [m.step for m in c.get_metric_history(plain.info.run_id, key)] == [0, 1]
    # seed 0 trained in the population is the plain run with seed 0 (dropout off in the CNN preset)
    for key in ("test_acc", "test_loss", "test_f1", "best_val_acc", "final_train_loss", "final_val_loss"):
        assert children[0].data.metrics[key] == pytest.approx(plain.data.metrics[key], rel=1e-5, abs=1e-6), key
    # the parent's figures follow from the children's numbers
    for key in ("test_acc", "best_val_acc", "final_val_loss"):
        values = [r.data.metrics[key] for r in children]
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        lo, hi = sps.t.interval(0.95, len(values) - 1, loc=mean, scale=sd / math.sqrt(len(values)))
        m = parent.data.metrics
        assert m[record.seeds_metric(key, "mean")] == pytest.approx(mean)
        assert m[record.seeds_metric(key, "ci_low")] == pytest.approx(lo)
        assert m[record.seeds_metric(key, "ci_high")] == pytest.approx(hi)
        assert f"{key:<18} {mean:>9.4f} " in out and f"[{lo:.4f}, {hi:.4f}]" in out
    assert parent.data.metrics[record.SEEDS_COUNT] == 4
    assert "seeds 0-3 (one population of 4)" in out


def test_seeds_fall_back_to_sequential_runs_and_say_why(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    # ~20 s: two 1-epoch Lightning runs
    aug = "data.augment=[{name: gaussian_noise, std: 0.1}]"
    args = ["train", CONFIG, "--seeds", "0,2", "--set", *SET, "trainer.max_epochs=1", aug, "tracking.experiment=fb"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "one after another: data.augment=" in err and "not vectorised" in err
    c = MlflowClient(store)
    runs = _runs(c, "fb")
    (parent,) = [r for r in runs if record.SEEDS in r.data.tags]
    assert parent.data.tags[record.SEEDS_RUNNER] == "sequential"
    assert parent.data.tags[record.SEEDS_FALLBACK].startswith("data.augment=")
    children = [r for r in runs if r is not parent]
    assert sorted(r.data.tags[record.SEED] for r in children) == ["0", "2"]
    assert all(r.data.tags[record.PARENT] == parent.info.run_id for r in children)
    assert record.seeds_metric("test_acc", "ci_low") in parent.data.metrics


@pytest.mark.parametrize("seeds", ["5", "2-1", "0,0", "x", "0-3 --set seed=1"])
def test_bad_seeds_exit_2_and_write_nothing(seeds: str, store: str, capsys: pytest.CaptureFixture[str]) -> None:
    text, *more = seeds.split(" --set ")
    extra = ["--set", *more] if more else []
    assert main(["train", CONFIG, "--seeds", text, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlsuite: error: ") and "seed" in err and len(err.strip().splitlines()) == 1
    assert not (Path("mlruns") / "mlflow.db").exists()


@pytest.mark.slow
def test_sigkilled_seeds_leave_parent_and_children_to_the_next_command(
    store: str, data_cache: Path, tmp_path: Path
) -> None:
    # ~25 s: a subprocess population killed once its 3 children exist, then `dlsuite list` reaps them
    env = cli_env(store, data_cache)
    long = [*SET, "trainer.max_epochs=100000", "tracking.experiment=k9s"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dlsuite", "train", CONFIG, "--seeds", "0-2", "--set", *long],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    c = MlflowClient(store)
    deadline = time.monotonic() + 240
    try:
        while len(_runs(c, "k9s")) < 4:
            assert proc.poll() is None and time.monotonic() < deadline, "the population did not start"
            time.sleep(0.5)
        time.sleep(1.0)  # the children's first writes are done: the population trains
    finally:
        proc.kill()
        proc.wait()
    assert {r.info.status for r in _runs(c, "k9s")} == {"RUNNING"}
    reaped = run_cli(["list"], env, tmp_path)
    assert reaped.returncode == 0 and "ended 4 orphaned runs KILLED" in reaped.stderr
    assert {r.info.status for r in _runs(c, "k9s")} == {"KILLED"}


def test_a_diverging_member_fails_alone_and_leaves_the_others_untouched(store: str) -> None:
    # ~5 s: two tiny populations in process; member 1 has a learning rate that turns its loss NaN
    from dlsuite.runner import seeds_population
    from dlsuite.runner.seeds import seed_config
    from tests.conftest import tiny_config

    quiet = ["tracking.diagnostics.enabled=false", "tracking.log_model=false", "tracking.plots=false"]
    base = tiny_config(*quiet, "optim.name=sgd", "tracking.experiment=div")
    prep = seeds_population.prepare(base, [0, 1])
    prep.cfgs[1] = seed_config(tiny_config(*quiet, "optim.name=sgd", "optim.lr=1e6", "tracking.experiment=div"), 1)
    (fine, _, ok), (_, history, failure) = seeds_population.train_members(prep, None, [])
    assert ok is None and failure is not None and "diverged" in failure and len(history) == 1
    alone = seeds_population.prepare(base, [0, 1])
    alone.cfgs = alone.cfgs[:1]
    (same, _, _), *_ = seeds_population.train_members(alone, None, [])
    for key in ("test_acc", "test_loss", "final_train_loss", "best_val_acc"):
        assert fine[key] == pytest.approx(same[key], rel=1e-5), key  # the NaN member did not leak into member 0
    c = MlflowClient(store)
    states = {r.data.tags[record.SEED]: r for r in _runs(c, "div") if record.SEED in r.data.tags}
    assert states["1"].info.status == "FAILED" and "diverged" in states["1"].data.tags[record.ERROR]
    assert states["0"].info.status == "FINISHED"


def test_a_signal_whose_exception_python_dropped_still_ends_the_seeds_killed(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlsuite.build import load_run_config
    from dlsuite.runner.seeds import train_seeds
    from dlsuite.tracking.runs import Killed

    overrides = [*SET, "trainer.max_epochs=200", "tracking.experiment=dropped"]
    drop_a_sigint_at_step(monkeypatch, 3)
    with pytest.raises(Killed, match="SIGINT"):
        train_seeds(load_run_config(CONFIG, overrides), [0, 1, 2], overrides)
    c = MlflowClient(store)
    runs = _runs(c, "dropped")
    assert len(runs) == 4  # the parent and a child per seed
    for run in runs:
        assert run.info.status == "KILLED" and "SIGINT" in run.data.tags[record.ERROR], run.data.tags
        assert len(c.get_metric_history(run.info.run_id, "train_loss")) <= 1  # stopped at once
