"""The life of one MLflow run: created only once the config is valid, always ended.

A run ends FINISHED on success, FAILED on an exception (the reason in the ``dlsuite.error`` tag),
KILLED on Ctrl-C or SIGTERM. A process killed with SIGKILL cannot end its run, so every run records
its owner (host, pid, process start time) and the next dlsuite command on that host reaps runs whose
owner is gone, ending them KILLED: no run stays RUNNING once the suite is started again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from dlsuite.tracking import record, store

if TYPE_CHECKING:
    from dlsuite.config import RunConfig

OWNER_TAG = record.OWNER
ERROR_TAG = record.ERROR

log = logging.getLogger(__name__)


class Killed(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives, so the run unwinds and ends KILLED."""


class Signals:
    """While installed (main thread only), SIGTERM and SIGINT raise :class:`Killed` and are recorded.

    Python runs a signal handler wherever the main thread is, also inside a ``__del__`` or a callback
    from C code, where a raised exception is printed and dropped (seen: one Ctrl-C in four left a run
    training, its ``Killed`` dropped in an SQLAlchemy weakref callback). The record survives that:
    :meth:`check` at safe points (each training step) raises it all the same.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        """Take SIGTERM and SIGINT over; outside the main thread nothing changes (its caller handles them)."""

        def handler(signum: int, frame: FrameType | None) -> None:
            self.received = signal.Signals(signum).name
            raise Killed(self.received)

        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: the caller handles signals
            self._old = {}

    def restore(self) -> None:
        """Give the handlers that were there before :meth:`install` back."""
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def check(self) -> None:
        """Raise :class:`Killed` if a signal arrived, even when its exception was dropped."""
        if self.received:
            raise Killed(self.received)

    def __enter__(self) -> Signals:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def _stat_field(pid: int, index: int) -> str:
    """A field of /proc/<pid>/stat after the command name (0: state letter, 19: start time), or ``?``."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[index]
    except (OSError, IndexError):
        return "?"


def _start_time(pid: int) -> str:
    """Process start time (clock ticks since boot), to tell a reused pid apart."""
    return _stat_field(pid, 19)


def _state(pid: int) -> str:
    """Process state letter (``Z`` for a zombie, ``X`` for dead)."""
    return _stat_field(pid, 0)


def create_run(client: Any, experiment_id: str, run_name: str | None, tags: dict[str, str]) -> Any:
    """``client.create_run``, exactly once.

    MLflow's HTTP client retries every request, creations included, when no answer came: a tracking
    server restarted after it stored a run but before it answered gets the creation again and stores a
    second run (seen in ``test_tracking_server_killed_and_restarted_mid_study_loses_no_trial``: two runs
    for one trial, one of them left RUNNING). On a server every creation carries a token; the copies
    that share it, other than the run the client got back, are deleted. Local stores do not retry.
    """
    remote = str(client.tracking_uri).startswith(("http://", "https://"))
    token = uuid.uuid4().hex
    run = client.create_run(
        experiment_id, run_name=run_name, tags={**tags, **({record.CREATION: token} if remote else {})}
    )
    if remote:
        same = client.search_runs([experiment_id], f"tags.`{record.CREATION}` = '{token}'", max_results=10)
        for copy in same:
            if copy.info.run_id != run.info.run_id:
                log.warning(
                    "run %s was created twice (a retried request); deleting the copy %s",
                    run.info.run_id,
                    copy.info.run_id,
                )
                client.delete_run(copy.info.run_id)
    return run


def die_with_parent() -> None:
    """Have this process get SIGTERM when its parent dies (Linux; elsewhere nothing): a study worker, a
    DDP rank or a figure helper left alive by a ``kill -9`` of its parent would go on writing."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def owner_id(pid: int | None = None) -> str:
    """``host:pid:start`` naming a live process."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"


def owner_alive(owner: str) -> bool | None:
    """Whether the owning process still runs; None when it ran on another host (cannot tell)."""
    try:
        host, pid_s, start = owner.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # A zombie still answers kill(pid, 0) but runs no more: a worker killed with its coordinator is not
    # reaped when the container's init does not reap orphans.
    if _state(pid) in ("Z", "X"):
        return False
    return start == "?" or _start_time(pid) == start


def owner_dead(owner: str) -> bool:
    """Whether the process named by ``owner`` (``host:pid:start``) is known to be gone (False on another host)."""
    return owner_alive(owner) is False


def log_params(client: Any, run_id: str, params: Mapping[str, Any]) -> None:
    """Log ``params`` on a run in one call; ``MlflowClient.log_batch`` splits them into batches MLflow takes.

    Values are cut to 6,000 characters, MLflow's limit for a param value.
    """
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])


def reap_orphans(c: Any, reason: str = "owner process died (killed?)") -> list[str]:
    """End as KILLED every RUNNING run whose owner on this host is gone; return their ids."""
    reaped: list[str] = []
    exp_ids = [e.experiment_id for e in c.search_experiments()]
    if not exp_ids:
        return reaped
    for run in c.search_runs(exp_ids, filter_string="attributes.status = 'RUNNING'", max_results=5000):
        owner = run.data.tags.get(OWNER_TAG)
        if owner and owner_dead(owner):
            c.set_tag(run.info.run_id, ERROR_TAG, reason)
            c.set_terminated(run.info.run_id, status="KILLED")
            reaped.append(run.info.run_id)
    return reaped


def store_exists(uri: str | None = None) -> bool:
    """Whether the store at ``uri`` (resolved as :func:`~dlsuite.tracking.store.resolve_uri` does) is
    there already; a server or database URI is taken to exist (asking would need a connection)."""
    resolved = store.resolve_uri(uri)
    if resolved.startswith("sqlite:///"):
        return Path(resolved[len("sqlite:///") :]).is_file()
    return True


def reap_store(uri: str | None = None) -> list[str]:
    """Reap orphaned runs in the store at ``uri`` if it exists (never creating it); return their ids.

    Every command that opens the store calls this first (see ``dlsuite.cli.main``), so a run whose
    process was killed with SIGKILL is ended by whatever command comes next, not only by the next
    ``train``. It costs one search of RUNNING runs. A store that cannot be read is left alone: the
    command itself will say what is wrong with it.
    """
    if not store_exists(uri):
        return []
    resolved = store.resolve_uri(uri)
    if resolved.startswith("sqlite:///") and not _dead_owners_in_sqlite(Path(resolved[len("sqlite:///") :])):
        return []  # nothing to reap: no MLflow import, no client (the common case costs milliseconds)
    try:
        return reap_orphans(store.client(uri))
    except Exception as exc:  # noqa: BLE001  reaping is housekeeping; never fail the command over it
        log.warning("could not look for orphaned runs in %s: %s", store.resolve_uri(uri), exc)
        return []


def _dead_owners_in_sqlite(path: Path) -> bool:
    """Whether a RUNNING run in the SQLite store at ``path`` has an owner that is gone (or the store
    cannot be read this way, in which case the MLflow client decides)."""
    import sqlite3

    query = (
        "SELECT t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
        "WHERE r.status = 'RUNNING' AND r.lifecycle_stage = 'active' AND t.key = ?"
    )
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
            owners = [row[0] for row in db.execute(query, (OWNER_TAG,))]
    except sqlite3.Error:
        return True
    return any(owner_dead(o) for o in owners)


def reaped_note(reaped: list[str]) -> str:
    """``ended 2 orphaned runs KILLED (their processes were gone: ab12cd34, ...)``."""
    n = len(reaped)
    ids = ", ".join(r[:8] for r in reaped[:5]) + (", ..." if n > 5 else "")
    gone = "its process was" if n == 1 else "their processes were"
    return f"ended {n} orphaned run{'s' if n != 1 else ''} KILLED ({gone} gone: {ids})"


class TrackedRun:
    """Context manager around one MLflow run.

    Args:
        uri: tracking URI (None: default store).
        experiment: experiment name.
        run_name: the run's name.
        tags: tags set at creation.
        parent_run_id: makes this a child run (``mlflow.parentRunId``), e.g. a study trial.
        number: name the run ``<run_name>-N`` (N counts earlier runs of that name in the experiment),
            so repeated runs of one config are told apart; ``label`` follows after a space.
        label: what sets the run apart (e.g. its overrides), appended to the name.
    """

    def __init__(
        self,
        uri: str | None,
        experiment: str,
        run_name: str,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        number: bool = False,
        label: str = "",
    ) -> None:
        self.client = store.client(uri)
        self.experiment = experiment
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.parent_run_id = parent_run_id
        self.number = number
        self.label = label
        self.run_id = ""
        self.status = "RUNNING"
        self._signals = Signals()

    def __enter__(self) -> TrackedRun:
        # Signals are ours before the run exists: one that lands between creating the run and taking
        # them over would end the process by the default handler and leave the run RUNNING.
        self._signals.install()
        try:
            reap_orphans(self.client)
            exp = store.experiment_id(self.client, self.experiment)
            tags = {**self.tags, OWNER_TAG: owner_id()}
            if self.parent_run_id:
                tags[record.PARENT] = self.parent_run_id
            if self.number:
                self.run_name = self._numbered_name(exp)
            if self.label:
                self.run_name = f"{self.run_name} {self.label}"
            run = create_run(self.client, exp, self.run_name, tags)
            self.run_id = run.info.run_id
            self.raise_if_signalled()
        except BaseException as exc:  # __exit__ is not called when __enter__ raises: end the run here
            if self.run_id:
                self.__exit__(type(exc), exc, exc.__traceback__)
            else:
                self._signals.restore()
            raise
        return self

    def raise_if_signalled(self) -> None:
        """Raise :class:`Killed` if SIGTERM/SIGINT arrived, even when its exception was dropped
        (:class:`Signals`); callers check at safe points, such as each training batch."""
        self._signals.check()

    def _numbered_name(self, exp: str) -> str:
        # The latest runs of that name suffice: numbers grow with start time. Two runs started in the
        # same instant may get one number; their ids still differ.
        like = self.run_name.replace("%", "_").replace("'", "_")  # "_" matches any one character
        latest = self.client.search_runs(
            [exp], f"attributes.run_name LIKE '{like}-%'", max_results=200, order_by=["attributes.start_time DESC"]
        )
        return record.numbered(self.run_name, [r.info.run_name for r in latest])

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._signals.restore()
        # a signal taken by a handler nested inside this run's (a population's) arrives as its Killed
        signalled = self._signals.received or (str(ev) if isinstance(ev, Killed) else None)
        clean_exit = isinstance(ev, SystemExit) and not ev.code and not signalled
        if et is None or clean_exit:
            self.status = "FINISHED"
        elif signalled or issubclass(et, KeyboardInterrupt):
            self.status = "KILLED"
            self.client.set_tag(self.run_id, ERROR_TAG, f"interrupted ({signalled or 'KeyboardInterrupt'})")
        else:
            self.status = "FAILED"
            self.client.set_tag(self.run_id, ERROR_TAG, f"{et.__name__}: {ev}"[:5000])
        self.client.set_terminated(self.run_id, status=self.status, end_time=int(time.time() * 1000))

    def log_config(self, cfg: RunConfig, extra: Mapping[str, Any]) -> None:
        """Log the run config as flat params (with ``extra`` ones) and as ``config.yaml``, to reproduce the run."""
        log_params(self.client, self.run_id, {**cfg.flat(), **extra})
        self.client.log_text(self.run_id, cfg.to_yaml(), "config.yaml")

    @property
    def interrupted_by(self) -> str | None:
        """The signal that ended the run, if any."""
        return self._signals.received
