"""Where studies live: an Optuna journal file by default, PostgreSQL for several hosts.

The storage matrix (docs/studies.md, "Storage"):

- one host, any number of workers: ``JournalStorage(JournalFileBackend)``, a file that the workers
  append to (Optuna advises against SQLite for parallel writers: "database is locked");
- several hosts: Optuna's ``RDBStorage`` on PostgreSQL through psycopg 3
  (``postgresql+psycopg://user@host:5432/db``; a plain ``postgresql://`` URL is read the same way).
  psycopg 3 rather than pg8000 (which fails past 32,767 trials) or psycopg2 (in maintenance).

"Count the budget, then ask for a trial" must be atomic among every worker of a study, or two workers
that ask at once both see room for one more trial. :func:`budget_lock` makes it so: on a journal file an
``flock`` on a lock file beside it (every worker shares the host), on PostgreSQL a transaction-level
advisory lock keyed by the study name (every worker shares the server). Both are dropped by the kernel or
the server when their holder dies, so a ``kill -9`` never leaves a study locked.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlsuite.errors import DlsuiteError
from dlsuite.tracking.store import flock

if TYPE_CHECKING:  # optuna is imported when a storage is opened: checking a study file stays light
    import optuna

ENV = "DLSUITE_STUDY_STORAGE"

# Each worker is single-threaded: it needs one connection for Optuna and one for the budget lock. A
# small pool keeps N workers far below PostgreSQL's default max_connections (100): at most
# POOL_SIZE + MAX_OVERFLOW + 1 per process. pre-ping replaces connections the server (or a firewall)
# dropped while idle; recycling every 30 min keeps them under common idle timeouts.
POOL_SIZE = 2
MAX_OVERFLOW = 1
POOL_RECYCLE_S = 1800
CONNECT_TIMEOUT_S = 10
ENGINE_KWARGS: dict[str, Any] = {
    "pool_size": POOL_SIZE,
    "max_overflow": MAX_OVERFLOW,
    "pool_pre_ping": True,
    "pool_recycle": POOL_RECYCLE_S,
    "pool_timeout": 60,
}
_SCHEMES = ("postgresql", "postgresql+psycopg")

# Crash recovery on PostgreSQL is by lease: a worker records a heartbeat for its running trial every
# lease/4 seconds (Optuna's ``record_heartbeat``, stamped with the server's clock, so hosts' clocks do not
# matter); a RUNNING trial whose heartbeat is older than the lease is failed and re-queued by whichever
# worker, on any host, next asks for a trial. 60 s covers a GC pause or a slow checkpoint write; set
# ``$DLSUITE_STUDY_LEASE_S`` to trade faster recovery against false alarms.
LEASE_ENV = "DLSUITE_STUDY_LEASE_S"
LEASE_S = 60


def lease_s() -> int:
    """The lease (grace period) in seconds: ``$DLSUITE_STUDY_LEASE_S`` or 60."""
    raw = os.environ.get(LEASE_ENV)
    try:
        value = int(raw) if raw else LEASE_S
    except ValueError:
        raise DlsuiteError(f"${LEASE_ENV} must be a whole number of seconds >= 2 (got {raw!r})") from None
    if value < 2:
        raise DlsuiteError(f"${LEASE_ENV} must be a whole number of seconds >= 2 (got {raw!r})")
    return value


def heartbeat_s() -> int:
    """Seconds between heartbeats: a quarter of the lease, so three can be missed before it expires."""
    return max(1, lease_s() // 4)


def resolve_storage(storage: str | None = None) -> str:
    """The storage: explicit, else ``$DLSUITE_STUDY_STORAGE``, else ``./mlruns/optuna/journal.log``.

    A value with ``://`` is a database URL (``postgres://`` and ``postgresql://`` become
    ``postgresql+psycopg://``); anything else a journal file path.
    """
    value = storage or os.environ.get(ENV) or str(Path("mlruns") / "optuna" / "journal.log")
    if "://" not in value:
        return str(Path(value).expanduser().resolve())
    scheme, rest = value.split("://", 1)
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return value


def is_journal(url: str) -> bool:
    """Whether ``url`` names a journal file (not an RDB)."""
    return "://" not in url


def is_postgres(url: str) -> bool:
    """Whether ``url`` is a PostgreSQL URL."""
    return url.split("://", 1)[0] in _SCHEMES


def redact(url: str) -> str:
    """``url`` without its password, for messages."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    auth, host = rest.rsplit("@", 1)
    user = auth.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in auth else ''}@{host}"


def _engine_kwargs(url: str) -> dict[str, Any]:
    kwargs = dict(ENGINE_KWARGS)
    if is_postgres(url):
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return kwargs


def check_storage(url: str) -> None:
    """Refuse (``DlsuiteError``) a storage that cannot be used, before anything is written.

    A journal file's folder must be creatable; a database must answer ``SELECT 1`` within
    ``CONNECT_TIMEOUT_S`` seconds. Only PostgreSQL is supported among databases (SQLite locks under
    parallel workers; MySQL is untested here).
    """
    if is_journal(url):
        parent = Path(url).parent
        existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
        if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
            raise DlsuiteError(f"study storage {url}: cannot create its folder {parent}")
        return
    if not is_postgres(url):
        raise DlsuiteError(
            f"study storage {redact(url)}: unsupported; use a journal file path or "
            "postgresql+psycopg://user@host:5432/db"
        )
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, **_connect_args(url))
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        engine.dispose()
    except ModuleNotFoundError as exc:  # the driver
        hint = "pip install 'psycopg[binary]'"
        raise DlsuiteError(f"study storage {redact(url)}: driver missing ({exc}); {hint}") from None
    except Exception as exc:  # noqa: BLE001  any connection failure is the user's to fix: say which
        raise DlsuiteError(f"study storage {redact(url)} is unreachable: {_first_line(exc)}") from None


def _connect_args(url: str) -> dict[str, Any]:
    return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}} if is_postgres(url) else {}


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_RDB: dict[str, optuna.storages.RDBStorage] = {}


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url`` (creating the journal's folder when needed).

    One ``RDBStorage`` (one small pool) per URL per process. Creating Optuna's tables on a fresh
    database is done under a session advisory lock: two hosts starting at once would otherwise race
    in ``CREATE TABLE`` (duplicate ``pg_type`` rows).
    """
    import optuna

    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    if url not in _RDB:
        import warnings

        with _advisory_lock(url, "dlsuite:create-tables", session=True), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
            _RDB[url] = optuna.storages.RDBStorage(
                url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=heartbeat_s(), grace_period=lease_s()
            )
    return _RDB[url]


def _key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


_LOCK_ENGINES: dict[str, Any] = {}


def _lock_engine(url: str) -> Any:
    # A separate one-connection engine: the lock's connection stays checked out while Optuna's own
    # pool does the study's reads and writes.
    if url not in _LOCK_ENGINES:
        import sqlalchemy

        _LOCK_ENGINES[url] = sqlalchemy.create_engine(
            url, pool_size=1, max_overflow=0, pool_pre_ping=True, pool_recycle=POOL_RECYCLE_S, **_connect_args(url)
        )
    return _LOCK_ENGINES[url]


@contextlib.contextmanager
def _advisory_lock(url: str, name: str, session: bool = False) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock for ``name`` (transaction-level unless ``session``)."""
    if not is_postgres(url):
        yield
        return
    import sqlalchemy

    if session:  # before Optuna's engine exists: a throwaway connection
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, **_connect_args(url))
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": _key(name)})
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _key(name)})
                    conn.commit()
        finally:
            engine.dispose()
        return
    with _lock_engine(url).begin() as conn:  # commit (or rollback) releases the lock
        conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _key(name)})
        yield


@contextlib.contextmanager
def budget_lock(url: str, study: str = "") -> Iterator[None]:
    """Hold the exclusive lock shared by every worker of study ``study`` in storage ``url``.

    Journal file: an ``flock`` on ``<journal>.dlsuite.lock`` (the workers share the host). PostgreSQL:
    ``pg_advisory_xact_lock`` keyed by the study name (the workers share the server, on any host).
    """
    if not is_journal(url):
        with _advisory_lock(url, f"dlsuite:budget:{study}"):
            yield
        return
    with flock(url + ".dlsuite.lock"):
        yield
