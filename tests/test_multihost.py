"""Studies shared by several processes through PostgreSQL (the several-hosts storage), on real servers.

Tests marked ``services`` need the PostgreSQL server the project's machines and CI run at
127.0.0.1:5432 (trust auth); each creates its own database and drops it after. The refusal tests need
no server: they point at a port nothing listens on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from dlsuite.cli import main
from dlsuite.hpo.runner import TrialOutcome
from dlsuite.hpo.spec import load_study_spec
from dlsuite.hpo.storage import MAX_OVERFLOW, POOL_SIZE, open_storage, resolve_storage
from dlsuite.hpo.trials import OWNER_ATTR, REQUEUED_ATTR, RETRY_OF_ATTR
from dlsuite.tracking import record
from tests.test_studies import SEARCH, write_study

ROOT = Path(__file__).resolve().parents[1]
PG = os.environ.get("DLSUITE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432")


def free_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _admin() -> object:
    import psycopg

    return psycopg.connect(PG.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped (with its connections) afterwards."""
    name = f"dlsuite_t_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:  # type: ignore[attr-defined]
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG}/{name}"
    finally:
        with _admin() as conn:  # type: ignore[attr-defined]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    """``dlsuite server`` (SQLite backend, served artifacts) in ``folder`` on ``port``, once it answers."""
    from dlsuite.errors import DlsuiteError
    from dlsuite.tracking.store import check_uri

    cmd = [sys.executable, "-m", "dlsuite", "server", "--dir", str(folder), "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    end = time.time() + 180
    while True:
        try:
            check_uri(f"http://127.0.0.1:{port}", timeout=2)
            return proc
        except DlsuiteError:
            if proc.poll() is not None or time.time() > end:
                os.killpg(proc.pid, 9)
                raise AssertionError("the tracking server did not come up") from None
            time.sleep(0.5)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server's whole process group (MLflow starts worker processes)."""
    import contextlib
    import signal

    with contextlib.suppress(ProcessLookupError):  # already stopped
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture
def tracking_server(tmp_path: Path) -> Iterator[str]:
    """A ``dlsuite server`` in its own folder on a free port; its URL."""
    port = free_port()
    proc = start_server(tmp_path / "server", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(proc)


class PeakConnections:
    """Samples ``pg_stat_activity`` for one database every 0.1 s in a thread; ``peak`` is the most seen."""

    def __init__(self, db: str) -> None:
        self.db, self.peak, self._stop = db, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with _admin() as conn:  # type: ignore[attr-defined]
            while not self._stop.is_set():
                row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.db,)).fetchone()
                self.peak = max(self.peak, int(row[0]))
                self._stop.wait(0.1)

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def study_cli(
    args: list[str], cwd: Path, tracking: str, data: Path, epochs: int = 1, new_session: bool = False
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MLFLOW_TRACKING_URI": tracking,
        "DLSUITE_DATA": str(data),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, "-m", "dlsuite", "study", "run", *args, "--set", f"trainer.max_epochs={epochs}"]
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=new_session,  # its own process group, to kill it as a whole host
    )


def check_one_study(
    url: str, tracking: str, name: str, n: int, outs: list[str] | None = None
) -> list[optuna.trial.FrozenTrial]:
    """Exactly ``n`` COMPLETE trials numbered 0..n-1, one MLflow child run per trial under one parent.

    ``outs`` (the processes' output) goes into the message when a trial did not complete.
    """
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    trials = study.trials
    reasons = {t.number: t.user_attrs.get("fail_reason") for t in trials if t.state != TrialState.COMPLETE}
    assert [t.state for t in trials] == [TrialState.COMPLETE] * n, (reasons, [o[-4000:] for o in outs or []])
    assert sorted(t.number for t in trials) == list(range(n))
    client = mlflow.MlflowClient(tracking)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get(record.STUDY_PARENT) == "true"]
    children = [r for r in runs if record.TRIAL in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_id == study.user_attrs["mlflow_parent_run_id"]
    assert sorted(int(r.data.tags[record.TRIAL]) for r in children) == list(range(n))
    assert {r.data.tags[record.PARENT] for r in children} == {parents[0].info.run_id}
    assert {r.info.run_id for r in children} == {t.user_attrs["mlflow_run_id"] for t in trials}
    assert not [r for r in runs if r.info.status == "RUNNING"]
    return trials


# -- refusals: no server needed ----------------------------------------------------------------
@pytest.mark.parametrize("which", ["storage", "tracking"])
def test_an_unreachable_server_is_refused_with_exit_2_and_nothing_written(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    path = write_study(tmp_path, SEARCH, name="down")
    port = free_port()
    flag = (
        ["--storage", f"postgresql+psycopg://postgres@127.0.0.1:{port}/x"]
        if which == "storage"
        else ["--tracking-uri", f"http://127.0.0.1:{port}"]
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["study", "run", str(path), *flag]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreachable" in err[0] and f"127.0.0.1:{port}" in err[0], err
    assert "Traceback" not in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no mlruns/, no journal, no report


def test_postgres_urls_are_read_with_psycopg_3() -> None:
    assert resolve_storage("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert resolve_storage("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert resolve_storage("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


# -- on the real PostgreSQL ----------------------------------------------------------------------
@pytest.mark.services
@pytest.mark.slow
def test_two_workers_on_postgres_reach_n_trials_on_a_bounded_pool(
    store: str, tmp_path: Path, data_cache: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study(tmp_path, SEARCH.replace("n_trials: 3", "n_trials: 4"), name="pg2")
    with PeakConnections(pg_url.rsplit("/", 1)[1]) as peak:
        proc = study_cli([str(path), "--workers", "2", "--storage", pg_url], tmp_path, store, data_cache)
        out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    trials = check_one_study(pg_url, store, "pg2", 4)
    assert len({t.user_attrs["dlsuite.owner"] for t in trials}) >= 1
    # coordinator + 2 workers, each at most its Optuna pool and one budget-lock connection
    bound = 3 * (POOL_SIZE + MAX_OVERFLOW + 1)
    with capsys.disabled():
        print(f"\n[pg] peak connections to the study database with 2 workers: {peak.peak} (bound {bound})")
    assert 1 <= peak.peak <= bound
    for bad in ("database is locked", "OperationalError", "Traceback"):
        assert bad not in out


@pytest.mark.services
@pytest.mark.slow
def test_two_independent_study_runs_share_one_exact_budget(
    tmp_path: Path, data_cache: Path, pg_url: str, tracking_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two "hosts": separate working folders, sharing only the PostgreSQL URL and the tracking server's
    HTTP address (``dlsuite server``, its store and artifacts in its own folder)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    hosts = [tmp_path / "host_a", tmp_path / "host_b"]
    procs = []
    for host in hosts:
        host.mkdir()
        path = write_study(host, SEARCH.replace("n_trials: 3", "n_trials: 6"), name="pgb")
        args = [str(path), "--storage", pg_url, "--tracking-uri", tracking_server]
        # Trials of a few seconds, so that both processes are asking while the other runs.
        # $MLFLOW_TRACKING_URI points nowhere usable: --tracking-uri must win everywhere (reaper, workers).
        procs.append(study_cli(args, host, f"http://127.0.0.1:{free_port()}", data_cache, epochs=4))
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = check_one_study(pg_url, tracking_server, "pgb", 6, outs)
    for out in outs:
        for bad in ("database is locked", "Traceback", "OperationalError", "Connection refused"):
            assert bad not in out
    owners = {t.user_attrs["dlsuite.owner"] for t in trials}
    assert len(owners) == 2, owners  # both "hosts" ran trials
    for host in hosts:  # neither host holds the study or the runs: only its own report
        assert not (host / "mlruns" / "optuna").exists() and not (host / "mlruns" / "mlflow.db").exists()


class InstantRunner:
    """A trial that takes no time (the project's TrialRunner interface, not a mock of Optuna or MLflow):
    four processes asking as fast as they can is the harshest test of the budget lock."""

    def run(self, cfg: object, trial: optuna.Trial, ctx: object) -> TrialOutcome:
        return TrialOutcome("COMPLETE", metrics={"best_val_acc": float(trial.number)})


def _worker(paths: list[str], url: str, index: int, barrier: object) -> None:
    from dlsuite.hpo.study import open_study, work

    for path in paths:
        spec = load_study_spec(path, ["tracking.enabled=false"])
        open_study(spec, url, index)  # created/loaded before the barrier: the asks then come together
        barrier.wait()  # type: ignore[attr-defined]
        work(spec, url, None, index, runner=InstantRunner())


@pytest.mark.services
def test_budget_is_exact_when_four_processes_ask_at_once(tmp_path: Path, pg_url: str) -> None:
    """Eight studies of 2 trials, four processes released together on each: without an atomic
    count-and-ask they overshoot (measured with the lock taken out: 4 trials each); with it, exactly 2 each."""
    import multiprocessing

    names = [f"race{i}" for i in range(8)]
    paths = [str(write_study(tmp_path, SEARCH.replace("n_trials: 3", "n_trials: 2"), name=n)) for n in names]
    ctx = multiprocessing.get_context("fork")  # no storage is open in this process yet: nothing shared
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_worker, args=(paths, pg_url, i, barrier)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    sizes = {n: len(optuna.load_study(study_name=n, storage=open_storage(pg_url)).trials) for n in names}
    assert sizes == dict.fromkeys(names, 2)


@pytest.mark.services
@pytest.mark.slow
def test_a_killed_hosts_trial_is_failed_and_retried_when_its_lease_expires(
    tmp_path: Path, data_cache: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Host A is killed (SIGKILL to its process group) mid-trial; host B fails A's trial once its lease
    expires, re-runs its parameters, and the study ends at its budget with nothing RUNNING."""
    import datetime as dt
    import signal

    shared = tmp_path / "tracking"
    shared.mkdir()
    tracking = f"sqlite:///{shared / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    monkeypatch.setenv("DLSUITE_STUDY_LEASE_S", "4")  # heartbeats every 1 s; the default is 60 s
    procs = {}
    for host in ("a", "b"):
        (tmp_path / host).mkdir()
        path = write_study(tmp_path / host, SEARCH.replace("n_trials: 3", "n_trials: 5"), name="lease")
        args = [str(path), "--storage", pg_url, "--tracking-uri", tracking]
        procs[host] = study_cli(args, tmp_path / host, tracking, data_cache, epochs=4, new_session=True)
    a = procs["a"]
    storage = open_storage(pg_url)

    def a_mid_trial() -> optuna.trial.FrozenTrial | None:
        if "lease" not in optuna.study.get_all_study_names(storage):
            return None
        for t in optuna.load_study(study_name="lease", storage=storage).trials:
            owner = t.user_attrs.get("dlsuite.owner", "")
            if t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs and f":{a.pid}:" in owner:
                return t
        return None

    end = time.time() + 300
    victim = a_mid_trial()
    while victim is None and a.poll() is None and time.time() < end:
        time.sleep(0.2)
        victim = a_mid_trial()
    assert victim is not None, "host A never ran a trial"
    os.killpg(a.pid, signal.SIGKILL)
    killed_at = dt.datetime.now()
    a.wait()
    out_b = procs["b"].communicate(timeout=600)[0]
    assert procs["b"].returncode == 0, out_b
    trials = optuna.load_study(study_name="lease", storage=storage).trials
    crashed = trials[victim.number]
    assert crashed.state == TrialState.FAIL and crashed.user_attrs["dlsuite.requeued"]
    assert "lease" in crashed.user_attrs["fail_reason"]
    retry = [t for t in trials if t.user_attrs.get("dlsuite.retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == victim.params
    counted = [t for t in trials if t.state.is_finished() and not t.user_attrs.get("dlsuite.requeued")]
    assert len(counted) == 5 and not [t for t in trials if not t.state.is_finished()]
    client = mlflow.MlflowClient(tracking)
    assert client.get_run(victim.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    exp = client.get_experiment_by_name("lease")
    assert not [r for r in client.search_runs([exp.experiment_id]) if r.info.status == "RUNNING"]
    with capsys.disabled():
        seconds = (retry[0].datetime_start - killed_at).total_seconds()
        print(f"\n[pg] lease 4 s: host killed -> its trial retried after {seconds:.1f} s")


@pytest.mark.services
def test_sixteen_workers_stay_far_below_postgres_max_connections(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import multiprocessing

    path = str(write_study(tmp_path, SEARCH.replace("n_trials: 3", "n_trials: 48"), name="many"))
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(16)
    with PeakConnections(pg_url.rsplit("/", 1)[1]) as peak:
        procs = [ctx.Process(target=_worker, args=([path], pg_url, i, barrier)) for i in range(16)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(600)
    assert [p.exitcode for p in procs] == [0] * 16
    trials = optuna.load_study(study_name="many", storage=open_storage(pg_url)).trials
    assert len(trials) == 48 and all(t.state == TrialState.COMPLETE for t in trials)
    bound = 16 * (POOL_SIZE + MAX_OVERFLOW + 1)
    with capsys.disabled():
        print(f"\n[pg] peak connections with 16 worker processes: {peak.peak} (bound {bound}; server default 100)")
    assert 16 <= peak.peak <= bound < 100


@pytest.mark.services
def test_connections_dropped_by_the_server_are_replaced(tmp_path: Path, pg_url: str) -> None:
    """pool_pre_ping: after the server kills every connection of the study (an idle timeout, a restart),
    the same process goes on with new ones instead of failing on a dead one."""
    from dlsuite.hpo.study import work

    path = write_study(tmp_path, SEARCH, name="ping")
    spec = load_study_spec(path, ["tracking.enabled=false", "n_trials=2"])
    work(spec, pg_url, None, runner=InstantRunner())
    with _admin() as conn:  # type: ignore[attr-defined]
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (pg_url.rsplit("/", 1)[1],),
        ).fetchone()[0]
    assert killed >= 1  # this process's pooled connections were there, idle, and are now gone
    work(spec.model_copy(update={"n_trials": 4}), pg_url, None, runner=InstantRunner())
    trials = optuna.load_study(study_name="ping", storage=open_storage(pg_url)).trials
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.services
def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_recovered(tmp_path: Path, pg_url: str) -> None:
    """A host killed between asking a trial (and naming its owner) and the trial's first heartbeat leaves a
    RUNNING trial that Optuna's stale check never finds (it joins on the heartbeat table). The next worker
    recovers it under the budget lock; the study ends at its budget instead of waiting forever. Found by
    tests/test_hosts.py, where one such trial held three hosts until the test timed out."""
    from dlsuite.hpo.study import open_study, work

    path = write_study(tmp_path, SEARCH, name="nobeat")
    spec = load_study_spec(path, ["tracking.enabled=false", "n_trials=3"])
    study = open_study(spec, pg_url)
    orphan = study.ask({"optim.lr": optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True)})
    study._storage.set_trial_user_attr(orphan._trial_id, OWNER_ATTR, "another-host:4242:1")  # its dead owner
    result = work(spec, pg_url, None, deadline=time.time() + 120, runner=InstantRunner())
    assert result.stopped_by != "timeout"  # without the fix it waits on the orphan until the deadline
    trials = optuna.load_study(study_name="nobeat", storage=open_storage(pg_url)).trials
    first = trials[orphan.number]
    assert first.state == TrialState.FAIL and first.user_attrs[REQUEUED_ATTR]
    assert "before the trial began" in first.user_attrs["fail_reason"]
    retry = [t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == orphan.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params["optim.lr"] == first.params["optim.lr"]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


@pytest.mark.services
@pytest.mark.slow
def test_tracking_server_killed_and_restarted_mid_study_loses_no_trial(
    tmp_path: Path, data_cache: Path, pg_url: str
) -> None:
    """MLflow's HTTP client retries with backoff (MLFLOW_HTTP_REQUEST_MAX_RETRIES, about 2 minutes in
    all): a server back within that is a slow trial, not a lost one."""
    port = free_port()
    server = start_server(tmp_path / "server", port)
    uri = f"http://127.0.0.1:{port}"
    path = write_study(tmp_path, SEARCH.replace("n_trials: 3", "n_trials: 5"), name="srvkill")
    proc = study_cli([str(path), "--storage", pg_url, "--tracking-uri", uri], tmp_path, uri, data_cache, epochs=4)
    try:
        storage = open_storage(pg_url)
        end = time.time() + 300

        def a_trial_runs_after_one_finished() -> bool:
            if "srvkill" not in optuna.study.get_all_study_names(storage):
                return False
            ts = optuna.load_study(study_name="srvkill", storage=storage).trials
            return any(t.state == TrialState.COMPLETE for t in ts) and any(t.state == TrialState.RUNNING for t in ts)

        while not a_trial_runs_after_one_finished():
            assert proc.poll() is None and time.time() < end, "the study ended before the server could be killed"
            time.sleep(0.2)
        stop_server(server)
        time.sleep(5)  # the study goes on without its tracking server
        server = start_server(tmp_path / "server", port)  # same folder, same port
        out = proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out
        check_one_study(pg_url, uri, "srvkill", 5)
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_server(server)


@pytest.mark.slow
def test_a_creation_the_server_got_twice_leaves_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's HTTP client sends a creation again when its answer was lost (a server restarted after it
    stored the run): the copy, which carries the same creation token, is deleted; the returned run stays."""
    from dlsuite.tracking import runs

    port = free_port()
    server = start_server(tmp_path / "server", port)
    try:
        client = mlflow.MlflowClient(f"http://127.0.0.1:{port}")
        exp = client.create_experiment("twice")
        token = uuid.uuid4()
        # what the lost first request stored, then the same creation again (the client's retry)
        lost = client.create_run(exp, run_name="trial", tags={record.CREATION: token.hex, record.TRIAL: "1"})
        monkeypatch.setattr(runs.uuid, "uuid4", lambda: token)
        kept = runs.create_run(client, exp, "trial", {record.TRIAL: "1"})
        left = client.search_runs([exp])
        assert [r.info.run_id for r in left] == [kept.info.run_id]
        assert client.get_run(lost.info.run_id).info.lifecycle_stage == "deleted"
    finally:
        stop_server(server)
