"""What a study's trials say about themselves: the attributes crash recovery sets, and counts by state
that keep re-queued crashes apart from real failures.

Optuna has no state for "crashed and run again": a trial left RUNNING by a dead worker is told FAIL
and its parameters are enqueued as a new trial. Counted as FAIL, a ``kill -9`` soak showed "FAIL 20"
with no real failure, so these trials are counted as ``retried`` instead. A FAIL trial is retried when
the suite's crash recovery marked it (``dlsuite.requeued``), when a later trial names it as the one it
retries (``dlsuite.retry_of``), or when Optuna's own ``RetryHeartbeatStaleTrialCallback`` (RDB heartbeats)
retried it (the ``retry_history`` system attribute of the retry).
"""

from __future__ import annotations

from collections.abc import Iterable

from optuna.trial import FrozenTrial, TrialState

from dlsuite.tracking import record

OWNER_ATTR = record.ATTR_OWNER
"""User attribute: ``host:pid:start`` of the process running the trial."""
REQUEUED_ATTR = record.ATTR_REQUEUED
"""User attribute of a FAIL trial whose worker died or was interrupted and whose parameters were enqueued again."""
RETRY_OF_ATTR = record.ATTR_RETRY_OF
"""User attribute of a re-queued trial: the number of the trial it runs again."""
RETRIED = "retried"
"""The count key (and report label) of retried FAIL trials; not an Optuna state."""
STATES = ("COMPLETE", "PRUNED", "FAIL", RETRIED, "RUNNING", "WAITING")
"""Count keys in display order."""


def retried_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of the FAIL trials that were run again rather than failing on their own."""
    trials = list(trials)
    named: set[int] = set()
    for t in trials:
        if isinstance(t.user_attrs.get(RETRY_OF_ATTR), int):
            named.add(t.user_attrs[RETRY_OF_ATTR])
        named.update(n for n in t.system_attrs.get("retry_history", []) if isinstance(n, int))
    return {
        t.number
        for t in trials
        if t.state == TrialState.FAIL and (t.user_attrs.get(REQUEUED_ATTR) or t.number in named)
    }


def state_counts(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Trials per state name, with retried FAIL trials under ``retried`` rather than ``FAIL``; zero
    counts are left out."""
    trials = list(trials)
    retried = retried_numbers(trials)
    out: dict[str, int] = {}
    for t in trials:
        key = RETRIED if t.number in retried else t.state.name
        out[key] = out.get(key, 0) + 1
    return out
