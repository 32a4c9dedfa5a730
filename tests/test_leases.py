"""Leases on the journal file (one host): a worker renews a lease on its running trial; a trial whose lease
expired is failed and re-queued even though its process still lives (hung), which the PID check cannot
see. Real Optuna journal storage, real MLflow, a real forked worker process."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from dlsuite.hpo.leases import LEASE_ATTR, lease, recover
from dlsuite.hpo.spec import StudySpec, load_study_spec
from dlsuite.hpo.storage import budget_lock, resolve_storage
from dlsuite.hpo.study import open_study, suggest
from dlsuite.hpo.trials import OWNER_ATTR, REQUEUED_ATTR, RETRY_OF_ATTR
from dlsuite.tracking.runs import owner_id
from tests.test_studies import SEARCH, write_study

LEASE = 4  # renewed every second


def _hold_a_trial(spec: StudySpec, url: str, queue: Any) -> None:
    """A worker whose trial runs (and whose lease is renewed) until the process is stopped or killed."""
    study = open_study(spec, url)
    trial = study.ask()
    suggest(trial, spec)
    trial.set_user_attr(OWNER_ATTR, owner_id())
    with lease(study, trial):
        queue.put(trial.number)
        time.sleep(600)


def _wait_for(check: Callable[[], Any], timeout: float = 120) -> Any:
    end = time.time() + timeout
    while time.time() < end:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_hung_workers_trial_is_failed_and_requeued_when_its_lease_expires(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DLSUITE_STUDY_LEASE_S", str(LEASE))
    spec = load_study_spec(write_study(tmp_path, SEARCH, name="hung"))
    url = resolve_storage(spec.storage)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    worker = ctx.Process(target=_hold_a_trial, args=(spec, url, queue))
    worker.start()
    try:
        number = queue.get(timeout=120)
        study = open_study(spec, url)
        client = MlflowClient(store)

        def trial() -> optuna.trial.FrozenTrial:
            return study.get_trials(deepcopy=False)[number]

        def renewed_past_the_lease() -> bool:
            t = trial()
            return float(t.system_attrs.get(LEASE_ATTR, 0)) - t.datetime_start.timestamp() > LEASE

        _wait_for(renewed_past_the_lease)
        with budget_lock(url, spec.name):  # started longer ago than the lease, but renewed: its worker's
            assert recover(study, client, locked=True) == []
        os.kill(worker.pid, signal.SIGSTOP)  # hung: the process lives (the PID check sees nothing), renews no more

        def recovered() -> list[int]:
            with budget_lock(url, spec.name):
                return recover(study, client, locked=True)

        assert _wait_for(recovered) == [number]
        recovered_at = time.time()
    finally:
        worker.kill()
        worker.join()
    trials = study.get_trials(deepcopy=False)
    crashed = trials[number]
    assert crashed.state == TrialState.FAIL and crashed.user_attrs[REQUEUED_ATTR]
    assert "lease" in crashed.user_attrs["fail_reason"]
    silent = recovered_at - float(crashed.system_attrs[LEASE_ATTR])
    assert silent > LEASE  # not before the lease ran out
    with capsys.disabled():
        print(f"\n[journal] lease {LEASE} s: hung worker's trial re-queued {silent:.1f} s after its last renewal")
    retry = [t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert retry[0].system_attrs["fixed_params"] == crashed.params


def test_a_run_its_dead_worker_never_linked_to_the_trial_is_ended_with_the_trial(store: str, tmp_path: Path) -> None:
    # The worker died after creating its trial's MLflow run (tagged with study and trial number at
    # creation) but before writing the run id into the trial: recovery finds the run by its tags.
    import subprocess

    from dlsuite.tracking import record

    spec = load_study_spec(write_study(tmp_path, SEARCH, name="unlinked"))
    url = resolve_storage(spec.storage)
    study = open_study(spec, url)
    trial = study.ask()
    suggest(trial, spec)
    dead = subprocess.Popen(["sleep", "60"])
    trial.set_user_attr(OWNER_ATTR, owner_id(dead.pid))
    dead.kill()
    dead.wait()
    client = MlflowClient(store)
    exp = client.create_experiment("unlinked-exp")
    orphan = client.create_run(exp, tags={record.STUDY: spec.name, record.TRIAL: str(trial.number)}).info.run_id
    bystander = client.create_run(exp, tags={record.STUDY: spec.name, record.TRIAL: "99"}).info.run_id
    with budget_lock(url, spec.name):
        assert recover(study, client, locked=True) == [trial.number]
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(orphan).data.tags[record.STATE] == "FAIL"
    assert client.get_run(bystander).info.status == "RUNNING"
