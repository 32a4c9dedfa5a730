"""What the technique callbacks read from the task they run in, declared as protocols.

Techniques sit below the tasks, so they cannot import a task class; every task (``tasks/epoch.py``)
satisfies these. Checked with ``isinstance``, never looked up by attribute name.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import nn


@runtime_checkable
class WrapsModel(Protocol):
    """A task around a plain ``nn.Module`` (diagnostics sample it, snapshot ensembles copy it)."""

    model: nn.Module


@runtime_checkable
class RecordsEpochs(Protocol):
    """A task that keeps one record per epoch and its final test numbers."""

    history: list[dict[str, float]]
    test_results: dict[str, float]


@runtime_checkable
class HasObjective(Protocol):
    """A task whose training objective adds a penalty to the loss (logged by the diagnostics)."""

    objective: Any


@runtime_checkable
class RunLogger(Protocol):
    """A logger that names its MLflow client and run (``tracking.logger.EpochMLflowLogger``)."""

    client: Any
    run_id: str
