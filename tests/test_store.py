"""The MLflow store: created once under a lock when several processes start at once on a fresh folder,
a half-created one repaired, one that cannot be opened refused in one line."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import traceback
from pathlib import Path

import mlflow
import pytest

from dlsuite.cli import main
from dlsuite.tracking import store as tracking_store
from dlsuite.tracking.runs import TrackedRun
from tests.conftest import TINY, cli_env

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "mnist1d_cnn.yaml")
PROCESSES = 3
REPETITIONS = 10
OLD_REVISION = "a8c4a736bde6"  # an MLflow schema revision a racing creation was seen stuck at


def _one_run(uri: str, index: int, barrier: multiprocessing.synchronize.Barrier, folder: str) -> None:
    """A child process: wait for the others, then open the store through dlsuite and record one run."""
    try:
        barrier.wait(timeout=120)
        with TrackedRun(uri, "race", f"p{index}"):
            pass
    except BaseException:
        Path(folder, f"error-{index}.txt").write_text(traceback.format_exc())
        raise


def _finished(uri: str, experiment: str) -> list[str]:
    c = mlflow.MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id]) if exp else []
    return sorted(r.info.status for r in runs)


@pytest.mark.slow
def test_processes_started_at_once_on_a_fresh_folder_share_one_store(tmp_path: Path) -> None:
    # Forked after the imports, so each repetition costs the store's creation, not three interpreters.
    # Without the lock in store.client this failed in most repetitions (alembic CommandError,
    # "table _alembic_tmp_latest_metrics already exists") and left some databases unusable.
    ctx = multiprocessing.get_context("fork")
    for rep in range(REPETITIONS):
        folder = tmp_path / f"rep{rep}"
        folder.mkdir()
        uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
        barrier = ctx.Barrier(PROCESSES)
        procs = [ctx.Process(target=_one_run, args=(uri, i, barrier, str(folder))) for i in range(PROCESSES)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=180)
        codes = [p.exitcode for p in procs]
        errors = "\n".join(f.read_text() for f in folder.glob("error-*.txt"))
        assert codes == [0] * PROCESSES, f"repetition {rep}: exit codes {codes}\n{errors}"
        assert _finished(uri, "race") == ["FINISHED"] * PROCESSES, f"repetition {rep}"
    with TrackedRun(f"sqlite:///{tmp_path / 'rep0' / 'mlruns' / 'mlflow.db'}", "race", "later"):
        pass  # the store is usable afterwards
    assert _finished(f"sqlite:///{tmp_path / 'rep0' / 'mlruns' / 'mlflow.db'}", "race") == ["FINISHED"] * 4


@pytest.mark.slow
def test_three_train_commands_at_once_on_a_fresh_folder(tmp_path: Path, data_cache: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    env = cli_env(uri, data_cache)
    args = ["train", CONFIG, "--set", *TINY, "trainer.max_epochs=1", "tracking.plots=false", "tracking.experiment=t"]
    cmd = [sys.executable, "-m", "dlsuite", *args]
    procs = [
        subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(3)
    ]
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], "\n\n".join(outs)
    with TrackedRun(uri, "t", "later"):
        pass  # the store is usable afterwards
    assert _finished(uri, "t") == ["FINISHED"] * 4


def _complete_store(folder: Path) -> Path:
    db = folder / "complete.db"
    mlflow.MlflowClient(f"sqlite:///{db}")
    return db


def _half_created(complete: Path, folder: Path) -> Path:
    """A copy of a complete store, broken as a racing creation left one: an older schema version and
    alembic's temporary table. A copy, never opened by this process (MLflow caches open stores)."""
    db = folder / "mlruns" / "mlflow.db"
    db.parent.mkdir(parents=True)
    shutil.copy(complete, db)
    con = sqlite3.connect(db)
    con.execute("UPDATE alembic_version SET version_num = ?", (OLD_REVISION,))
    con.execute("CREATE TABLE _alembic_tmp_latest_metrics (key VARCHAR(250))")
    con.commit()
    con.close()
    old = time.time() - 3600  # left by a crash an hour ago, not being created right now
    os.utime(db, (old, old))
    return db


def test_half_created_store_without_runs_is_moved_aside_and_created_again(tmp_path: Path) -> None:
    complete = _complete_store(tmp_path)
    witness = _half_created(complete, tmp_path / "plain")
    with pytest.raises(Exception, match=r"already exists|out-of-date|revision"):
        mlflow.MlflowClient(f"sqlite:///{witness}")  # MLflow alone cannot open it

    db = _half_created(complete, tmp_path / "suite")
    uri = f"sqlite:///{db}"
    with TrackedRun(uri, "after", "r"):
        pass
    assert _finished(uri, "after") == ["FINISHED"]
    aside = list(db.parent.glob("mlflow.db.broken-*"))
    assert len(aside) == 1 and tracking_store.inspect_sqlite(aside[0]).half_created
    assert not tracking_store.inspect_sqlite(db).half_created


def test_store_with_runs_that_mlflow_cannot_open_is_refused_in_one_line(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with TrackedRun(store, "kept", "r"):
        pass
    # A copy under another name: this process has the original open already (MLflow caches its engine).
    db = Path(store[len("sqlite:///") :]).with_name("other.db")
    shutil.copy(store[len("sqlite:///") :], db)
    con = sqlite3.connect(db)
    con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")  # a schema this MLflow does not know
    con.commit()
    con.close()
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    capsys.readouterr()  # MLflow's own lines from creating the first store
    code = main(["train", CONFIG, "--set", *TINY, f"tracking.uri=sqlite:///{db}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "holds 1 run(s)" in err and "mlflow db upgrade" in err
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest  # left as it was
    assert not list(db.parent.glob("*.broken-*"))
