"""The terminal progress bar: the numbers a Lightning user expects, none that mean nothing to them."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

SHOWN = ("train_loss", "train_acc", "val_acc")
"""Epoch numbers shown beside the bar: the last finished epoch's training loss and accuracy and the
last validation accuracy. They are the per-epoch means the run logs anyway, so the bar adds no host
sync to the training step."""


class EpochProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar showing :data:`SHOWN` (when logged) instead of the logger's ``v_num``."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """The bar's postfix: the shown epoch numbers, 3 significant digits."""
        logged = trainer.callback_metrics
        return {k: f"{float(logged[k]):.3g}" for k in SHOWN if k in logged}
