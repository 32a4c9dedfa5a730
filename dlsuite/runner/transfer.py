"""Pretrain on one of the suite's tasks, then fine-tune on another: two MLflow runs, linked.

The fine-tune run names its source in the tag ``dlsuite.source_run`` (set by the transfer model from
``model.backbone: run:ID``); the source run gets ``dlsuite.finetuned_by`` (the latest fine-tune run's id)
so the link can be followed both ways in the MLflow UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlsuite.config import RunConfig, build_config
from dlsuite.errors import ConfigError
from dlsuite.runner.run import RunResult, train
from dlsuite.tracking import record, store


@dataclass
class TransferResult:
    """The pretraining run and the fine-tuning run that started from its checkpoint."""

    pretrain: RunResult
    finetune: RunResult


def finetune_config(finetune: RunConfig, source_run_id: str, **knobs: Any) -> RunConfig:
    """``finetune`` with its model replaced by a ``transfer`` model on run ``source_run_id``'s checkpoint.

    ``knobs`` are the transfer model's (``strategy``, ``backbone_lr``, ``unfreeze_epoch``...).
    """
    data = finetune.to_dict()
    data["model"] = {"name": "transfer", **knobs, "backbone": f"run:{source_run_id}"}
    return build_config(data, "(fine-tune)")


def pretrain_then_finetune(pretrain: RunConfig, finetune: RunConfig, **knobs: Any) -> TransferResult:
    """Train ``pretrain``, then fine-tune from its best checkpoint (``model.backbone: run:ID``).

    Args:
        pretrain: the source run's config.
        finetune: the target run's config (data, optimiser, trainer...); its model section is replaced
            by a ``transfer`` model on the source run with ``knobs``.
        knobs: transfer model knobs, e.g. ``strategy="finetune", backbone_lr_scale=0.1``.

    Raises:
        ConfigError: the pretraining run would be untracked or log no checkpoint.
    """
    if not (pretrain.tracking.enabled and pretrain.tracking.log_checkpoint):
        raise ConfigError("pretraining must be tracked with tracking.log_checkpoint: true to be fine-tuned from")
    finetune_config(finetune, "0" * 32, **knobs)  # validate the fine-tune before spending the pretraining
    first = train(pretrain)
    assert first.run_id is not None
    second = train(finetune_config(finetune, first.run_id, **knobs))
    if second.run_id is not None:
        store.client(pretrain.tracking.uri).set_tag(first.run_id, record.FINETUNED_BY, second.run_id)
    return TransferResult(first, second)
