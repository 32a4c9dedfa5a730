"""The reconstruction task: learn to reproduce the input (``task.name: reconstruction``).

Works with any dataset (labels are ignored) and any model returning the reconstruction, or
``(reconstruction, kl)`` as the ``autoencoder`` does (the KL term of a VAE, weighted by
``task.kl_weight``). The pixel loss is ``task.recon_loss``: ``mse``, ``l1`` or ``bce`` (logits against
inputs in [0, 1]: use ``data.normalize: unit``). Reported: ``loss`` (total), ``mse`` and ``kl``.
There is no accuracy, so the best checkpoint is picked by ``val_loss`` or ``val_mse``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from dlsuite.tasks.components import Components
from dlsuite.tasks.epoch import EpochTask

_RECON: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": F.mse_loss,
    "l1": F.l1_loss,
    "bce": F.binary_cross_entropy_with_logits,
}


class ReconstructionTask(EpochTask):
    """Wraps a model ``x -> x_hat`` or ``x -> (x_hat, kl)``."""

    MEANS = {"loss": "n", "mse": "n", "kl": "n"}

    def __init__(self, model: nn.Module, parts: Components, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__(model, parts, num_classes, input_shape)
        self.recon_loss = _RECON[parts.options.get("recon_loss", "mse")]
        self.kl_weight = float(parts.options.get("kl_weight", 1.0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction, kl)``; ``kl`` is 0 for models without a latent distribution."""
        out = self.model(x)
        return out if isinstance(out, tuple) else (out, out.new_zeros(()))

    def _step(self, stage: str, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x = batch[0]  # labels, if any, are not used
        x_hat, kl = self(x)
        loss = self.recon_loss(x_hat, x) + self.kl_weight * kl
        n = len(x)  # a host int: no host-to-device copy in the step
        mse = F.mse_loss(x_hat.detach(), x)
        self.add(stage, {"loss": loss * n, "mse": mse * n, "kl": kl * n, "n": n})
        return loss

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        """Reconstruction loss (+ weighted KL), averaged over the minibatch."""
        return self._step("train", batch)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        """Losses on the validation split (VAE: decoded from the latent mean)."""
        self._step("val", batch)

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        """Losses on the test split."""
        self._step("test", batch)
