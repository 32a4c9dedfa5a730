"""Three "hosts" on one study, sharing nothing but the PostgreSQL URL and a tracking server's address;
ten times a host running a trial is killed with SIGKILL and restarted, as a user or a SLURM requeue would.

Each host is a process group started by :func:`benchmarks.hosts.start_host`: ``dlsuite study run FILE
--workers 2 --storage PG --tracking-uri http://...`` in its own working folder, with its own HOME,
TMPDIR, data cache, study file and log, and (where the kernel allows ``unshare --uts``) its own
hostname. The tracking server (``dlsuite server``, started here) keeps the runs and their artifacts in
its own folder; nothing else is shared. Network namespaces are not used (see benchmarks/hosts.py).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import statistics
import subprocess
import time
from collections import Counter
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.hosts import own_hostnames, start_host, warm_data, write_study
from dlsuite.hpo.storage import open_storage
from dlsuite.hpo.trials import OWNER_ATTR, REQUEUED_ATTR, RETRY_OF_ATTR
from dlsuite.tracking import record
from tests.test_multihost import free_port, pg_url, start_server, stop_server  # noqa: F401  pg_url: a fixture

N_TRIALS = 60
KILLS = 10
# Trials of a few seconds: a restarted host takes a few trials' time to start (three Python processes
# importing torch), so that ten kills fit in a 60-trial study while the other hosts go on.
EPOCHS = 3
LEASE_S = 6  # heartbeats every 1 s; the default lease is 60 s
BAD = ("database is locked", "OperationalError", "Connection refused", "could not connect", "Traceback")


def group_pids(pgid: int) -> set[int]:
    """The processes of process group ``pgid`` (a host: its coordinator and workers)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[2]) == pgid:
                pids.add(int(entry.name))
    return pids


def running_on(study: optuna.Study, pids: set[int]) -> list[optuna.trial.FrozenTrial]:
    """Trials RUNNING in ``study`` whose owner (``host:pid:start``) is one of ``pids``."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(t.user_attrs.get(OWNER_ATTR, "::"))
        if int(owner.rsplit(":", 2)[1] or -1) in pids:
            out.append(t)
    return out


@pytest.mark.services
@pytest.mark.slow
def test_three_hosts_one_study_through_ten_host_kills(
    tmp_path: Path,
    data_cache: Path,
    pg_url: str,  # noqa: F811  the fixture imported above
    capsys: pytest.CaptureFixture[str],
) -> None:
    """60 counted trials reached by three hosts while a host is killed (SIGKILL to its process group)
    mid-trial and restarted at once, ten times at random moments: nothing finished is lost,
    every killed trial is failed by lease expiry and retried, nothing is left RUNNING, one MLflow child
    run per trial under one parent, no storage or connection error in any host's log."""
    rng = random.Random(os.environ.get("DLSUITE_TEST_SEED", "hosts"))
    port = free_port()
    server = start_server(tmp_path / "server", port)
    tracking = f"http://127.0.0.1:{port}"
    folders = [tmp_path / f"h{i}" for i in range(3)]
    hosts: list[subprocess.Popen[bytes]] = []
    lease = {"DLSUITE_STUDY_LEASE_S": str(LEASE_S)}
    try:
        for folder in folders:
            folder.mkdir()
            study_file = write_study(folder, "hosts", N_TRIALS, EPOCHS)  # each host its own copy
            warm_data(study_file, data_cache)  # once; each host gets its own copy of the cache
            hosts.append(start_host(folder, study_file, pg_url, tracking, 2, lease, data_cache))
        storage = open_storage(pg_url)
        end = time.time() + 1500  # a generous bound on a loaded machine; CI takes a few minutes
        while "hosts" not in optuna.study.get_all_study_names(storage):
            assert time.time() < end and all(h.poll() is None for h in hosts), "no host created the study"
            time.sleep(0.5)
        study = optuna.load_study(study_name="hosts", storage=storage)
        killed: dict[int, dt.datetime] = {}  # trial number -> when its host was killed
        # The kills fall at random points of the study's progress (after k COMPLETE trials, k drawn from
        # 3..50), so they spread over the study whatever this machine's speed, all before its budget.
        targets = sorted(rng.sample(range(3, N_TRIALS - 9), KILLS))
        kills = 0
        while kills < KILLS:
            while True:
                assert time.time() < end, f"only {kills} kills before the time limit"
                ended = [i for i, h in enumerate(hosts) if h.poll() is not None]
                assert not ended, (
                    f"host {ended[0]} ended (exit {hosts[ended[0]].returncode}) after {kills} kills: "
                    + (folders[ended[0]] / "host.log").read_text(errors="replace")[-4000:]
                )
                done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
                if done >= targets[kills] and any(running_on(study, group_pids(h.pid)) for h in hosts):
                    break
                time.sleep(0.2)
            time.sleep(rng.uniform(0.0, 1.0))  # a random moment in the trials now running
            busy = [i for i, h in enumerate(hosts) if running_on(study, group_pids(h.pid))]
            if not busy:
                continue
            victim = rng.choice(busy)
            pids = group_pids(hosts[victim].pid)
            os.killpg(hosts[victim].pid, signal.SIGKILL)
            at = dt.datetime.now()
            hosts[victim].wait()
            lost = running_on(study, pids)
            study_file = folders[victim] / "hosts.yaml"
            hosts[victim] = start_host(folders[victim], study_file, pg_url, tracking, 2, lease)  # requeued
            if not lost:  # its trial ended in the instant between the look and the kill: restarted, not counted
                continue
            kills += 1
            killed.update(dict.fromkeys((t.number for t in lost), at))
        codes = [h.wait(timeout=900) for h in hosts]
        logs = {f.name: (f / "host.log").read_text(errors="replace") for f in folders}
        assert codes == [0, 0, 0], logs
        check_final_state(pg_url, tracking, killed, logs, folders, capsys)
    finally:
        for h in hosts:
            if h.poll() is None:
                os.killpg(h.pid, signal.SIGKILL)
                h.wait()
        stop_server(server)


def check_final_state(
    url: str,
    tracking: str,
    killed: dict[int, dt.datetime],
    logs: dict[str, str],
    folders: list[Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The store after the study, whatever the timing was."""
    trials = optuna.load_study(study_name="hosts", storage=open_storage(url)).trials
    by_number = {t.number: t for t in trials}
    assert sorted(by_number) == list(range(len(trials)))  # no duplicate or missing trial numbers
    assert not [t.number for t in trials if not t.state.is_finished()]  # nothing RUNNING or WAITING
    requeued = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get(REQUEUED_ATTR)]
    counted = [t for t in trials if t not in requeued]
    assert len(counted) == N_TRIALS and {t.state for t in counted} == {TrialState.COMPLETE}
    # Every killed trial: failed because its lease expired, then its parameters run again.
    retries = {t.user_attrs[RETRY_OF_ATTR]: t for t in trials if RETRY_OF_ATTR in t.user_attrs}
    to_retry, to_fail = [], []
    for n, at in sorted(killed.items()):
        t = by_number[n]
        assert t in requeued, (n, t.state, t.user_attrs)
        assert f"no heartbeat for {LEASE_S}s" in t.user_attrs["fail_reason"], t.user_attrs["fail_reason"]
        assert t.datetime_complete is not None
        to_fail.append((t.datetime_complete - at).total_seconds())
        if not t.params:  # killed between ask and sampling: nothing to run again
            continue
        retry = retries[n]
        # The retry runs what was sampled; a host killed between two suggestions leaves the rest to the
        # sampler, so the retry may have more parameters, never other values.
        assert retry.params.items() >= t.params.items(), (retry.params, t.params)
        to_retry.append((retry.datetime_start - at).total_seconds())  # type: ignore[operator]
        while retry.state != TrialState.COMPLETE:  # a retry may itself have been killed
            assert retry in requeued
            retry = retries[retry.number]
    # MLflow: one parent; one FINISHED child run per counted trial, linked both ways; none RUNNING.
    client = mlflow.MlflowClient(tracking)
    exp = client.get_experiment_by_name("hosts")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(record.STUDY_PARENT) == "true"]
    children = [r for r in runs if record.TRIAL in r.data.tags]
    assert len(parents) == 1 and {r.data.tags[record.PARENT] for r in children} == {parents[0].info.run_id}
    per_trial = Counter(int(r.data.tags[record.TRIAL]) for r in children)
    assert max(per_trial.values()) == 1, per_trial.most_common(3)
    finished = {r.info.run_id for r in children if r.info.status == "FINISHED"}
    assert {t.user_attrs["mlflow_run_id"] for t in counted} <= finished
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    for t in requeued:  # a killed trial's run, if it had one, is ended and says why
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id:
            run = client.get_run(run_id)
            assert run.info.status != "RUNNING" and run.data.tags.get(record.STATE) == "FAIL"
    for name, text in logs.items():
        for bad in BAD:
            assert bad not in text, (name, bad)
    for folder in folders:  # no host holds the study or the runs: only its own report
        assert not (folder / "work" / "mlruns" / "optuna").exists()
        assert not (folder / "work" / "mlruns" / "mlflow.db").exists()
    with capsys.disabled():
        print(
            f"\n[hosts] 3 hosts x 2 workers, {len(killed)} trials killed in {KILLS} host kills, lease {LEASE_S} s,"
            f" own hostnames: {own_hostnames()}; {len(trials)} trials for {N_TRIALS} counted"
            f"\n[hosts] host killed -> its trial failed: {_spread(to_fail)}; -> retried: {_spread(to_retry)}"
        )


def _spread(seconds: list[float]) -> str:
    if not seconds:
        return "none"
    return f"median {statistics.median(seconds):.1f} s [{min(seconds):.1f}-{max(seconds):.1f}] over {len(seconds)}"
