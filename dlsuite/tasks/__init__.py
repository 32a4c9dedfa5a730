"""LightningModules that wrap plain models with training logic, registered by name (``task.name``)."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
from torch import nn

from dlsuite.config import RunConfig
from dlsuite.registry import Registry
from dlsuite.tasks.classification import ClassificationTask
from dlsuite.tasks.reconstruction import ReconstructionTask
from dlsuite.tasks.seq2seq import Seq2SeqTask

TaskBuilder = Callable[[nn.Module, RunConfig, int, tuple[int, ...]], L.LightningModule]
TASKS: Registry[TaskBuilder] = Registry("tasks", "training tasks (LightningModules)")
TASKS.add("classification", ClassificationTask)
TASKS.add("seq2seq", Seq2SeqTask)
TASKS.add("reconstruction", ReconstructionTask)


def create_task(model: nn.Module, cfg: RunConfig, num_classes: int, input_shape: tuple[int, ...]) -> L.LightningModule:
    """Wrap ``model`` in the task that ``cfg.task.name`` names."""
    return TASKS.get(cfg.task.name, what="task")(model, cfg, num_classes, input_shape)


__all__ = ["TASKS", "ClassificationTask", "ReconstructionTask", "Seq2SeqTask", "create_task"]
