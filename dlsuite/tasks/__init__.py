"""LightningModules that wrap plain models with training logic, registered by name (``task.name``).

Entries are lazy (a task module imports Lightning and torchmetrics). What validation needs to know
about a task without importing it is declared here in :data:`TASK_SPECS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dlsuite.registry import Registry

if TYPE_CHECKING:
    import lightning as L
    from torch import nn

    from dlsuite.tasks.components import Components

    TaskBuilder = Callable[[nn.Module, Components, int, tuple[int, ...]], L.LightningModule]


@dataclass(frozen=True)
class TaskSpec:
    """What a task needs and gives, for checks before anything is built."""

    targets: str
    """Kind of target its loss sees (``labels``: integer classes; ``none``: the task has its own loss)."""
    model_output: str
    """What the model must produce: ``logits`` (B, classes), ``tokens`` (B, T, vocab) or ``reconstruction``."""
    val_metrics: tuple[str, ...]
    """Validation metrics it logs every epoch (checkpoint and early-stopping monitors)."""


TASK_SPECS: dict[str, TaskSpec] = {
    "classification": TaskSpec("labels", "logits", ("val_loss", "val_acc", "val_f1")),
    "seq2seq": TaskSpec("labels", "tokens", ("val_loss", "val_acc", "val_seq_acc")),
    "reconstruction": TaskSpec("none", "reconstruction", ("val_loss", "val_mse", "val_kl")),
}

TASKS: Registry[TaskBuilder] = Registry("tasks", "training tasks (LightningModules)")
TASKS.add_lazy("classification", "dlsuite.tasks.classification:ClassificationTask")
TASKS.add_lazy("seq2seq", "dlsuite.tasks.seq2seq:Seq2SeqTask")
TASKS.add_lazy("reconstruction", "dlsuite.tasks.reconstruction:ReconstructionTask")
assert set(TASKS) == set(TASK_SPECS), "every task declares its TaskSpec"


def create_task(
    name: str, model: nn.Module, parts: Components, num_classes: int, input_shape: tuple[int, ...]
) -> L.LightningModule:
    """Wrap ``model`` in the task ``name``, which trains with the built ``parts``."""
    return TASKS.get(name, what="task")(model, parts, num_classes, input_shape)


__all__ = ["TASKS", "TASK_SPECS", "TaskSpec", "create_task"]
