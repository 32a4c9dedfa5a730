"""Where runs are recorded: the MLflow tracking URI and artifact root, and creating the store safely.

MLflow >= 3.13 refuses the old ``file:./mlruns`` store, so the default is a SQLite database with an
artifact folder beside it, both inside ``./mlruns/``. ``MLFLOW_TRACKING_URI`` or ``tracking.uri``
point elsewhere (a tracking server for several hosts, for example).

MLflow creates and migrates a SQLite store's tables the first time a client opens it, with no lock:
two or three processes started at once on a fresh folder raced there (alembic ``CommandError``,
``duplicate column name``, ``table _alembic_tmp_tags already exists``) and could leave the database
half-created for good. :func:`client` therefore opens a SQLite store for the first time in a process
while holding an exclusive lock on ``<db>.lock`` beside the database: the first process creates the
tables, the others wait and then find them. A half-created store that holds no run is moved aside
(``<db>.broken-<time>``) and created again; one that holds runs and that MLflow cannot open (an
interrupted migration, another MLflow version's schema) is refused with what to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlsuite.errors import DlsuiteError
from dlsuite.tracking.record import EXPERIMENT_KIND_TAG, EXPERIMENT_KIND_TRAINING

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

SETTLE_S = 20.0  # a half-created store written to this recently may still be being created
_READY: set[str] = set()  # SQLite stores this process has opened under the lock (MLflow caches the store)


def resolve_uri(uri: str | None = None) -> str:
    """The tracking URI: explicit, else ``$MLFLOW_TRACKING_URI``, else ``./mlruns/mlflow.db``."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / 'mlruns' / 'mlflow.db').resolve()}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def artifact_root(uri: str) -> str | None:
    """Artifact location for new experiments: ``<db folder>/artifacts`` for SQLite stores,
    the server's own default otherwise."""
    db = sqlite_path(uri)
    if db is not None:
        return (db.parent / "artifacts").resolve().as_uri()
    return None


@contextlib.contextmanager
def store_lock(db: Path) -> Iterator[None]:
    """Hold the exclusive lock ``<db>.lock`` that serialises creating (and repairing) the store.

    ``flock`` is released by the kernel when its holder dies, so a killed process never leaves the
    store locked. Every dlsuite process, ``study run --workers N`` coordinator and workers included,
    opens the store through :func:`client` and so through this one lock.
    """
    db.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        with contextlib.suppress(PermissionError):  # a read-only folder: nothing can be created, nothing to serialise
            held.enter_context(flock(f"{db}.lock"))
        yield


@contextlib.contextmanager
def flock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``path`` (created if missing) while the block runs.

    The kernel releases it when its holder dies, so a killed process never leaves it held.
    """
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def client(uri: str | None = None) -> MlflowClient:
    """An MLflow client on the resolved store; a SQLite store is created (or repaired) under :func:`store_lock`."""
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    resolved = resolve_uri(uri)
    if resolved.startswith(("http://", "https://")):
        return _server_client(resolved)
    db = sqlite_path(resolved)
    if db is None or str(db.resolve()) in _READY:
        return mlflow.MlflowClient(tracking_uri=resolved)
    with store_lock(db):
        c = _open_sqlite(resolved, db)
    _READY.add(str(db.resolve()))
    return c


_BROKEN = ("Connection broken", "IncompleteRead", "RemoteDisconnected", "Connection aborted")


def _server_client(uri: str) -> MlflowClient:
    """A client on a tracking server whose searches and reads are tried again when the answer broke off.

    MLflow's HTTP client retries a request that got no answer, but not one whose answer was cut in the
    middle (a server stopped while sending it: ``IncompleteRead``), which then failed the trial that
    asked (seen in ``test_tracking_server_killed_and_restarted_mid_study_loses_no_trial``). Reads are
    safe to send again; writes keep MLflow's own policy (creations: :func:`dlsuite.tracking.runs.create_run`).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    class _Client(mlflow.MlflowClient):
        def _again(self, call: Any, *args: Any, **kwargs: Any) -> Any:
            for wait in (1.0, 2.0, 4.0, 8.0, 16.0):
                try:
                    return call(*args, **kwargs)
                except MlflowException as exc:
                    if not any(b in str(exc) for b in _BROKEN):
                        raise
                    log.warning("tracking server answer broke off; asking again in %.0f s: %s", wait, exc)
                    time.sleep(wait)
            return call(*args, **kwargs)

        def search_runs(self, *args: Any, **kwargs: Any) -> Any:
            return self._again(super().search_runs, *args, **kwargs)

        def get_run(self, *args: Any, **kwargs: Any) -> Any:
            return self._again(super().get_run, *args, **kwargs)

        def search_experiments(self, *args: Any, **kwargs: Any) -> Any:
            return self._again(super().search_experiments, *args, **kwargs)

        def get_experiment_by_name(self, *args: Any, **kwargs: Any) -> Any:
            return self._again(super().get_experiment_by_name, *args, **kwargs)

    return _Client(tracking_uri=uri)


def _open_sqlite(uri: str, db: Path) -> MlflowClient:
    """Open the SQLite store (MLflow creates and migrates its tables); a half-created one without runs
    is first moved aside, one that MLflow cannot open is refused with what to do."""
    import mlflow

    state = inspect_sqlite(db)
    while _repairable(state) and _seconds_since_written(db) < SETTLE_S:
        # Maybe being created right now by a process outside this lock (``mlflow server``, a script):
        # wait until it is complete or has stopped changing.
        time.sleep(1.0)
        state = inspect_sqlite(db)
    if _repairable(state):
        # Before MLflow opens it: MLflow keeps one engine per URI, whose pooled connections would
        # otherwise stay on the moved file.
        aside = move_aside(db)
        log.warning(
            "the MLflow store %s was incomplete (%s) and held no run: moved it to %s, creating a new one",
            db,
            state.why,
            aside,
        )
    try:
        return mlflow.MlflowClient(tracking_uri=uri)  # builds the store: tables, migrations, default experiment
    except Exception as exc:  # noqa: BLE001  MLflow, alembic and SQLAlchemy raise their own types
        lines = str(exc).strip().splitlines()
        error = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]
        if state.unreadable:
            todo = "it is not a SQLite database: move it aside to start a new store there"
        elif state.half_created:
            todo = (
                f"it holds {state.runs} run(s) and is left as it is: back it up, then run "
                f"`mlflow db upgrade {uri}`, or move it aside to start a new store there"
            )
        else:
            todo = "check that its folder is writable and has space"
        raise DlsuiteError(f"the MLflow store {db} cannot be opened ({error}); {todo}") from None


def _repairable(state: SqliteState) -> bool:
    """Whether moving the store aside loses nothing: creation unfinished and no run recorded."""
    return state.half_created and not state.runs and not state.unreadable


def _seconds_since_written(db: Path) -> float:
    """Seconds since the database or its journal last changed."""
    times = [p.stat().st_mtime for p in (db, Path(f"{db}-journal"), Path(f"{db}-wal")) if p.exists()]
    return time.time() - max(times) if times else float("inf")


@dataclass
class SqliteState:
    """What a SQLite store holds, read without MLflow."""

    runs: int = 0
    """Runs recorded (0 when the ``runs`` table is missing)."""
    half_created: bool = False
    """Tables or migrations missing, or alembic's leftovers: a creation that did not finish."""
    unreadable: bool = False
    """Not a SQLite database at all."""
    why: str = ""
    """What is unfinished, for the message."""


def _head_revision() -> str | None:
    """The schema revision this MLflow creates (a private helper of MLflow; None if it moved)."""
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        return str(_get_latest_schema_revision())
    except Exception:  # noqa: BLE001  only sharpens the check below
        return None


def inspect_sqlite(db: Path) -> SqliteState:
    """Read ``db`` with ``sqlite3``: its run count and whether its creation was left unfinished."""
    if not db.exists() or db.stat().st_size == 0:
        return SqliteState()  # nothing yet (SQLite treats an empty file as an empty database)
    try:
        con = sqlite3.connect(db, timeout=30)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            runs = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if "runs" in tables else 0
            version = None
            if "alembic_version" in tables:
                row = con.execute("SELECT version_num FROM alembic_version").fetchone()
                version = row[0] if row else None
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return SqliteState(unreadable=True)
    head = _head_revision()
    why = []
    if not {"experiments", "runs"} <= tables:
        why.append("tables missing")
    if version is None:
        why.append("no schema version")
    elif head is not None and version != head:
        why.append(f"schema {version}, this MLflow's is {head}")
    if any(t.startswith("_alembic_tmp_") for t in tables):
        why.append("an interrupted migration's temporary tables")
    return SqliteState(runs=int(runs), half_created=bool(why), why=", ".join(why))


def move_aside(db: Path) -> Path:
    """Rename ``db`` (and its journal / WAL files) to ``<db>.broken-<time>-<pid>``; return the new path.

    The journal goes with it: a hot journal left beside a new database of the same name would be
    replayed into it.
    """
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    aside = db.with_name(f"{db.name}.broken-{stamp}")
    for suffix in ("", "-journal", "-wal", "-shm"):
        src = Path(f"{db}{suffix}")
        if src.exists():
            src.rename(f"{aside}{suffix}")
    return aside


def experiment_id(c: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created (with our artifact root) when missing, and marked as a
    model-training experiment so MLflow 3's UI opens it on the runs table (not on GenAI traces)."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) is None:  # made by an older dlsuite or by hand: mark it once
            c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND_TRAINING)
        return str(exp.experiment_id)
    try:
        return str(
            c.create_experiment(
                name,
                artifact_location=artifact_root(c.tracking_uri),
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND_TRAINING},
            )
        )
    except Exception:
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def check_uri(uri: str | None = None, timeout: float = 10.0) -> None:
    """Refuse (``DlsuiteError``) a tracking URI that cannot be reached, before anything is written.

    A tracking server (``http(s)://``) must answer its ``/health`` endpoint; a database store
    (``postgresql://``, ``mysql://``) must answer ``SELECT 1``; a SQLite store's folder must be
    creatable. MLflow's own client would instead retry for minutes and then fail mid-study.
    """
    resolved = resolve_uri(uri)
    scheme = resolved.split("://", 1)[0] if "://" in resolved else ""
    shown = _redact(resolved)
    if scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(resolved.rstrip("/") + "/health", timeout=timeout) as resp:  # noqa: S310
                if resp.status != 200:
                    raise DlsuiteError(f"tracking server {shown} answered /health with HTTP {resp.status}")
        except urllib.error.HTTPError as exc:
            raise DlsuiteError(f"tracking server {shown} answered /health with HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DlsuiteError(f"tracking server {shown} is unreachable: {reason}") from None
        return
    if scheme.split("+", 1)[0] in ("postgresql", "mysql", "mssql"):
        import sqlalchemy

        try:
            engine = sqlalchemy.create_engine(resolved, poolclass=sqlalchemy.pool.NullPool)
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
            engine.dispose()
        except Exception as exc:  # noqa: BLE001  any connection failure is the user's to fix: say which
            text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise DlsuiteError(f"tracking store {shown} is unreachable: {text[0] if text else exc}") from None
        return
    db = sqlite_path(resolved)
    if db is not None:
        existing = next((p for p in (db.parent, *db.parent.parents) if p.exists()), None)
        if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
            raise DlsuiteError(f"tracking store {shown}: cannot create its folder {db.parent}")


def _redact(uri: str) -> str:
    if "://" not in uri or "@" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    auth, host = rest.rsplit("@", 1)
    return f"{scheme}://{auth.split(':', 1)[0]}{':***' if ':' in auth else ''}@{host}"
