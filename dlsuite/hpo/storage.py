"""Where studies live: an Optuna journal file by default, an RDB URL for several hosts.

Optuna advises against SQLite for parallel writers ("database is locked"), so the local default is a
``JournalStorage(JournalFileBackend)`` file that any number of worker processes append to. A second,
dlsuite-owned lock file serialises "count the budget, then ask for a trial" across the workers of one
host, which is what makes ``n_trials`` exact; the kernel drops it when a holder is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import optuna

ENV = "DLSUITE_STUDY_STORAGE"


def resolve_storage(storage: str | None = None) -> str:
    """The storage: explicit, else ``$DLSUITE_STUDY_STORAGE``, else ``./mlruns/optuna/journal.log``.

    A value with ``://`` is an RDB URL (``postgresql://...``); anything else a journal file path.
    """
    value = storage or os.environ.get(ENV) or str(Path("mlruns") / "optuna" / "journal.log")
    if "://" in value:
        return value
    return str(Path(value).expanduser().resolve())


def is_journal(url: str) -> bool:
    """Whether ``url`` names a journal file (not an RDB)."""
    return "://" not in url


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage for ``url`` (creating the journal's folder when needed)."""
    if not is_journal(url):
        return optuna.storages.RDBStorage(url)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    Path(url).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(url))


@contextlib.contextmanager
def budget_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock shared by this storage's workers on this host.

    For an RDB shared by several hosts there is no common file; the budget is then checked without a
    lock and may be exceeded by at most one trial per host that asks at the same instant.
    """
    if not is_journal(url):
        yield
        return
    fd = os.open(url + ".dlsuite.lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
