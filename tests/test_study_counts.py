"""``dlsuite study list`` (and the study's report and final line) count re-queued crashed trials as
``retried``, apart from real failures."""

from __future__ import annotations

import multiprocessing
import os
import signal
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dlsuite.cli import main
from dlsuite.hpo.spec import StudySpec, load_study_spec
from dlsuite.hpo.storage import resolve_storage
from dlsuite.hpo.study import open_study, run_study, suggest
from dlsuite.hpo.trials import OWNER_ATTR, REQUEUED_ATTR, state_counts
from dlsuite.reports.study import load, render
from dlsuite.tracking.runs import owner_id

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "configs" / "mnist1d_cnn.yaml"
# Every trial diverges (NaN loss in its first epoch): a real failure, recorded FAIL with its reason.
STUDY = f"""name: soak
base: {CNN}
overrides:
  - trainer.max_epochs=1
  - data.train_samples=200
  - data.args.val_samples=100
  - model.width=4
  - tracking.log_checkpoint=false
  - tracking.plots=false
space:
  optim.lr: [1.0e+30]
n_trials: 1
"""


def _crash_mid_trial(spec: StudySpec, url: str) -> None:
    """A worker that asks a trial, claims it, and is killed with SIGKILL before it can tell anything."""
    study = open_study(spec, url)
    trial = study.ask()
    suggest(trial, spec)
    trial.set_user_attr(OWNER_ATTR, owner_id())
    os.kill(os.getpid(), signal.SIGKILL)


def _list_row(out: str, name: str) -> dict[str, str]:
    lines = out.strip().splitlines()
    header = lines[0].split()
    row = next(line.split() for line in lines[2:] if line.split()[0] == name)
    return dict(zip(header, row))


def test_study_list_shows_a_retried_crash_apart_from_a_real_failure(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "soak.yaml"
    path.write_text(STUDY)
    spec = load_study_spec(path)
    url = resolve_storage(spec.storage)
    child = multiprocessing.get_context("fork").Process(target=_crash_mid_trial, args=(spec, url))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL
    assert [t.state for t in load("soak").trials] == [TrialState.RUNNING]

    # Resuming recovers the dead worker's trial (FAIL, re-queued) and runs its retry, which diverges.
    result = run_study(spec)
    trials = load("soak").trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL]
    assert trials[0].user_attrs[REQUEUED_ATTR] and "died" in trials[0].user_attrs["fail_reason"]
    assert "diverged" in trials[1].user_attrs["fail_reason"] and REQUEUED_ATTR not in trials[1].user_attrs
    assert result.counts == {"FAIL": 1, "retried": 1}

    capsys.readouterr()
    assert main(["study", "list"]) == 0
    row = _list_row(capsys.readouterr().out, "soak")
    assert (row["trials"], row["FAIL"], row["retried"], row["COMPLETE"], row["RUNNING"]) == ("2", "1", "1", "0", "0")
    assert "trials: 2 (FAIL 1, retried 1)" in render(load("soak"))


def test_a_retry_made_by_optunas_heartbeat_callback_is_counted_as_retried() -> None:
    study = optuna.create_study()
    study.add_trial(optuna.create_trial(state=TrialState.FAIL))  # a real failure
    study.add_trial(optuna.create_trial(state=TrialState.FAIL))  # a stale trial the callback retries
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the callback is experimental
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.trials[1])
    assert study.trials[2].state == TrialState.WAITING
    assert state_counts(study.trials) == {"FAIL": 1, "retried": 1, "WAITING": 1}
