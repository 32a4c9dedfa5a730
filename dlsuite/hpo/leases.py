"""Crash recovery by lease: a running trial is owned by a worker that keeps renewing a lease on it in the
study's storage; any worker that finds a RUNNING trial whose lease expired fails it, re-queues its
parameters and ends its MLflow run KILLED.

One mechanism for both storages (docs/studies.md, "Crash safety"):

- PostgreSQL (``RDBStorage`` with heartbeats): the lease is Optuna's heartbeat (``record_heartbeat``),
  stamped with the database server's clock, so hosts' clocks do not matter; Optuna finds the expired
  ones (``_get_stale_trial_ids``). Its ``RetryHeartbeatStaleTrialCallback`` only runs under
  ``study.optimize``, and dlsuite asks and tells, so the failing and re-queueing is done here.
- Journal file (one host): ``JournalStorage`` has no heartbeat, so the lease is a trial system attribute
  (:data:`LEASE_ATTR`, the time of the last renewal) that the worker appends to the journal; appends are
  atomic under the journal's file lock. Every process reading it shares the host's clock. Until the first
  renewal the trial's start time is its lease.

The lease (``$DLSUITE_STUDY_LEASE_S``, 60 s) is renewed every quarter of it from a thread, so three
renewals can be missed before a live worker's trial is taken from it. On a journal file a trial whose
owner process is known to be gone (same host, PID gone or reused) is recovered at once, without waiting
for its lease: a study restarted after ``kill -9`` picks up its trials immediately. On PostgreSQL only
the lease counts: there another host's PIDs cannot be seen, and hosts sharing a host name (containers)
would look like one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dlsuite.hpo.runner import REASON_ATTR, RUN_ID_ATTR
from dlsuite.hpo.storage import heartbeat_s, lease_s
from dlsuite.hpo.trials import OWNER_ATTR, REQUEUED_ATTR, RETRY_OF_ATTR
from dlsuite.tracking import record
from dlsuite.tracking.runs import ERROR_TAG, owner_dead, reap_orphans

log = logging.getLogger(__name__)

LEASE_ATTR = record.ATTR_LEASE
"""Trial system attribute on a journal file: when (``time.time()``) its worker last renewed the lease."""


def mlflow_end(client: Any, run_id: str | None, state: str, reason: str | None = None) -> None:
    """Tag an MLflow trial run with its Optuna state; end it KILLED if it is still RUNNING."""
    if not run_id or client is None:
        return
    try:
        client.set_tag(run_id, record.STATE, state)
        if reason:
            client.set_tag(run_id, record.FAIL_REASON, reason[:5000])
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, ERROR_TAG, reason or "trial ended without ending its run")
            client.set_terminated(run_id, status="KILLED")
    except Exception as exc:  # noqa: BLE001  the run may live in another store; the trial state matters more
        log.warning("could not update MLflow run %s: %s", run_id, exc)


def fail_and_requeue(study: optuna.Study, t: FrozenTrial, reason: str, client: Any) -> None:
    """Mark a trial FAIL (not counted), enqueue its parameters again, end its MLflow run KILLED."""
    storage = study._storage
    storage.set_trial_user_attr(t._trial_id, REASON_ATTR, reason)
    storage.set_trial_user_attr(t._trial_id, REQUEUED_ATTR, True)
    try:
        study.tell(t.number, state=TrialState.FAIL)
    except (ValueError, RuntimeError) as exc:  # already finished by someone else
        log.info("trial %d: %s", t.number, exc)
        return
    params = t.params or t.system_attrs.get("fixed_params") or {}
    if params:
        kept = {k: v for k, v in t.user_attrs.items() if k in ("variant", "seed")}
        study.enqueue_trial(params, user_attrs={RETRY_OF_ATTR: t.number, **kept})
    for run_id in {t.user_attrs.get(RUN_ID_ATTR), *unlinked_runs(client, study.study_name, t.number)} - {None}:
        mlflow_end(client, run_id, "FAIL", reason)


def unlinked_runs(client: Any, study_name: str, number: int) -> list[str]:
    """RUNNING MLflow runs tagged as trial ``number`` of ``study_name``.

    A worker that dies between creating its trial's run (tagged at creation) and writing the run id
    into the trial leaves a run the trial does not name; found by its tags, it is ended with the trial.
    """
    if client is None:
        return []
    try:
        ids = [e.experiment_id for e in client.search_experiments()]
        flt = (
            f"tags.`{record.STUDY}` = '{study_name}' and tags.`{record.TRIAL}` = '{number}'"
            " and attributes.status = 'RUNNING'"
        )
        return [r.info.run_id for r in client.search_runs(ids, flt, max_results=100)] if ids else []
    except Exception as exc:  # noqa: BLE001  the store may be unreachable; the trial state matters more
        log.warning("could not look for trial %d's unlinked runs: %s", number, exc)
        return []


def leased_storage(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The study's ``RDBStorage`` when it keeps heartbeats (PostgreSQL), else None (a journal file).

    ``create_study`` wraps an ``RDBStorage`` in Optuna's private ``_CachedStorage``; look through it.
    """
    storage = getattr(study._storage, "_backend", study._storage)
    if isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval():
        return storage
    return None


def lease_expired(t: FrozenTrial, now: float, grace: float) -> bool:
    """Whether a RUNNING trial of a journal file was not renewed for ``grace`` seconds (host clock)."""
    start = t.datetime_start.timestamp() if t.datetime_start else 0.0
    last = max(float(t.system_attrs.get(LEASE_ATTR) or 0.0), start)
    return last > 0 and now - last > grace


def recover(study: optuna.Study, client: Any, locked: bool = False) -> list[int]:
    """Fail and re-queue RUNNING trials whose worker is gone (lease expired); return their numbers.

    Call under :func:`~dlsuite.hpo.storage.budget_lock` (``locked``) so two workers do not re-queue the
    same trial; a trial is asked and given its owner under that lock, so a RUNNING trial without an
    owner seen under the lock was asked by a process that died in between.
    """
    recovered = []
    storage = leased_storage(study)
    stale: set[int] | None = None
    unleased: set[int] = set()
    if storage is not None:
        stale = set(storage._get_stale_trial_ids(study._study_id))  # Optuna's own lease check
        if locked:  # Optuna's check skips trials that never beat: under the lock, their asker is dead
            unleased = never_beat(storage, study._study_id)
    grace = lease_s()
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER_ATTR)
        reason = f"lease of worker {owner or '(unknown)'} expired (no heartbeat for {grace}s)"
        if stale is not None:
            dead = t._trial_id in stale
        elif owner and owner_dead(owner):  # the journal's fast path: this host's process is gone
            dead, reason = True, f"worker {owner} died (killed?) while the trial ran"
        else:
            dead = lease_expired(t, now, grace)
        # Asked, beaten and owned under the lock: seen under it without either, its asker died in between.
        unbegun = locked and (not owner or t._trial_id in unleased)
        if dead or unbegun:
            fail_and_requeue(study, t, "worker died before the trial began" if unbegun else reason, client)
            recovered.append(t.number)
    if recovered and client is not None:
        reap_orphans(client)
        log.warning("study %s: trials %s were left running by dead workers; re-queued", study.study_name, recovered)
    return recovered


def never_beat(storage: optuna.storages.RDBStorage, study_id: int) -> set[int]:
    """Ids of the study's RUNNING trials with no heartbeat row (their worker died before its first beat)."""
    import sqlalchemy

    query = sqlalchemy.text(
        "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id"
        " WHERE t.study_id = :study AND t.state = 'RUNNING' AND h.trial_id IS NULL"
    )
    with storage.engine.connect() as conn:
        return {int(row[0]) for row in conn.execute(query, {"study": study_id})}


def _renew(study: optuna.Study, trial: optuna.Trial) -> None:
    storage = leased_storage(study)
    if storage is not None:
        storage.record_heartbeat(trial._trial_id)
    else:
        study._storage.set_trial_system_attr(trial._trial_id, LEASE_ATTR, time.time())


@contextlib.contextmanager
def lease(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Renew the trial's lease from a thread while the block runs (every quarter of the lease)."""
    interval = heartbeat_s()
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                _renew(study, trial)
            except optuna.exceptions.UpdateFinishedTrialError:
                return  # told already (or taken over by a worker that found the lease expired)
            except Exception as exc:  # noqa: BLE001  a blip: the next beat retries; the lease allows 3 misses
                log.warning("trial %d: lease renewal failed: %s", trial.number, exc)

    thread = threading.Thread(target=beat, name=f"lease-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


__all__ = [
    "LEASE_ATTR",
    "fail_and_requeue",
    "lease",
    "lease_expired",
    "leased_storage",
    "mlflow_end",
    "never_beat",
    "recover",
]
