"""Ensembles: averaging the softmax outputs of several models on the test split.

- Snapshot ensembles (Huang et al. 2017): one run with a ``cosine_restarts`` schedule; the weights at the end
  of each of the last ``members`` cycles (each a low-learning-rate minimum) are kept and averaged at test time,
  by :class:`SnapshotEnsemble`, a callback.
- Bagging (Breiman 1996): ``members`` runs, each on its own bootstrap sample of the training split with its
  own seed, recorded as child runs of one parent run; :func:`dlsuite.runner.protocols.bagging` runs them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.nn import functional as F

from dlsuite.config import RunConfig
from dlsuite.techniques.hooks import RecordsEpochs, WrapsModel
from dlsuite.techniques.optim import cycle_ends
from dlsuite.tracking import record


@torch.no_grad()
def predict_probs(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax outputs ``(N, K)`` of ``model`` (in eval mode) and the targets ``(N,)``, over ``batches``."""
    model.eval()
    probs, ys = [], []
    for x, y in batches:
        probs.append(model(x).softmax(-1))
        ys.append(y)
    return torch.cat(probs), torch.cat(ys)


# Names ensemble_metrics returns, and what a snapshot ensemble adds to a run's test results.
ENSEMBLE_METRICS = record.ENSEMBLE_METRICS
SNAPSHOT_METRICS = record.SNAPSHOT_METRICS


def ensemble_metrics(probs: Sequence[torch.Tensor], y: torch.Tensor) -> dict[str, float]:
    """Accuracy and NLL of the averaged softmax outputs of the members, and the members' mean accuracy."""
    mean = torch.stack([p.to(y.device) for p in probs]).mean(0)
    member_acc = [float((p.to(y.device).argmax(-1) == y).float().mean()) for p in probs]
    return {
        "ensemble_test_acc": float((mean.argmax(-1) == y).float().mean()),
        "ensemble_test_loss": float(F.nll_loss(mean.clamp_min(1e-12).log(), y)),
        "ensemble_member_test_acc_mean": sum(member_acc) / len(member_acc),
        "ensemble_members": float(len(probs)),
    }


class SnapshotEnsemble(Callback):
    """Keeps the weights at the end of each restart cycle; at test, adds the ensemble's metrics.

    Args:
        cfg: the run config (schedule and ``regularization.ensemble.members``).
    """

    def __init__(self, cfg: RunConfig) -> None:
        s = cfg.optim.schedule
        assert cfg.regularization.ensemble is not None
        self.members = cfg.regularization.ensemble.members
        self.ends = set(cycle_ends(s.restart_epochs, s.restart_mult, s.warmup_epochs, cfg.trainer.max_epochs))
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.epochs: list[int] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Snapshot the model at a cycle's end, keeping the last ``members``."""
        if trainer.current_epoch in self.ends:
            model = pl_module.model if isinstance(pl_module, WrapsModel) else pl_module
            self.snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            self.epochs.append(trainer.current_epoch)
            self.snapshots, self.epochs = self.snapshots[-self.members :], self.epochs[-self.members :]

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Evaluate the averaged snapshots on the test data; results join the task's test results."""
        dm = getattr(trainer, "datamodule", None)
        if not self.snapshots or dm is None:
            return
        model = pl_module.model if isinstance(pl_module, WrapsModel) else pl_module
        probs, y = [], torch.zeros(0)
        for state in self.snapshots:
            m = copy.deepcopy(model)
            m.load_state_dict(state)
            p, y = predict_probs(m, dm.test_dataloader())
            probs.append(p)
        results: dict[str, Any] = ensemble_metrics(probs, y)
        results["ensemble_last_snapshot_epoch"] = float(self.epochs[-1])
        if isinstance(pl_module, RecordsEpochs):
            pl_module.test_results.update({k: float(v) for k, v in results.items() if math.isfinite(float(v))})
