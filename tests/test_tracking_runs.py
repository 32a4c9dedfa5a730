"""Run owners: one check (``owner_dead``) serves run reaping and study recovery; real processes, real MLflow."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from mlflow import MlflowClient

from dlsuite.tracking import record
from dlsuite.tracking import store as st
from dlsuite.tracking.runs import owner_dead, owner_id, reap_orphans


def _wait_for_exit(pid: int) -> None:
    """Until the child has exited (a zombie: its parent has not reaped it yet)."""
    for _ in range(1000):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not exit")


def test_owner_dead_for_live_zombie_gone_reused_and_foreign_owners() -> None:
    assert not owner_dead(owner_id())  # this process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = owner_id(child.pid)
    _wait_for_exit(child.pid)
    assert owner_dead(owner)  # a zombie still answers kill(pid, 0) but runs no more
    child.wait()
    assert owner_dead(owner)  # gone
    host, pid, start = owner_id().rsplit(":", 2)
    assert owner_dead(f"{host}:{pid}:{int(start) + 1}")  # the pid, reused by another process
    assert not owner_dead(f"not-{socket.gethostname()}:1:1")  # another host: cannot tell, so not dead
    assert not owner_dead("garbage")


def test_reap_orphans_ends_only_runs_of_dead_owners(store: str) -> None:
    c = MlflowClient(store)
    exp = st.experiment_id(c, "owners")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner = owner_id(child.pid)
    child.wait()
    dead = c.create_run(exp, tags={record.OWNER: dead_owner}).info.run_id
    alive = c.create_run(exp, tags={record.OWNER: owner_id()}).info.run_id
    assert reap_orphans(c) == [dead]
    assert c.get_run(dead).info.status == "KILLED" and record.ERROR in c.get_run(dead).data.tags
    assert c.get_run(alive).info.status == "RUNNING"
    c.set_terminated(alive)
