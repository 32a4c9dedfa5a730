"""The sequence-to-sequence task: token sequences in, token sequences out (``task.name: seq2seq``).

Training is teacher-forced (the decoder sees the true previous token); validation and test decode
greedily from the model's own predictions, so their numbers are what the model does on its own.
Reported: token accuracy (``acc``) and whole-sequence exact-match accuracy (``seq_acc``).
The loss is ``task.loss`` (cross-entropy by default) over every output token.
"""

from __future__ import annotations

import torch
from torch import nn

from dlsuite.tasks.components import Components
from dlsuite.tasks.epoch import EpochTask


class Seq2SeqTask(EpochTask):
    """Wraps a model ``(src (B, L), tgt (B, T) | None) -> logits (B, T, vocab)``."""

    MEANS = {"loss": "n", "acc": "tokens", "seq_acc": "n"}

    def __init__(self, model: nn.Module, parts: Components, num_classes: int, input_shape: tuple[int, ...]) -> None:
        super().__init__(model, parts, num_classes, input_shape)
        assert parts.loss is not None, "seq2seq needs a loss"
        self.loss_fn = parts.loss

    def forward(self, src: torch.Tensor, tgt: torch.Tensor | None = None) -> torch.Tensor:
        """Token logits; teacher-forced when ``tgt`` is given, greedy otherwise."""
        return self.model(src, tgt)

    def _step(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor], teacher: bool) -> torch.Tensor:
        src, tgt = batch  # (B, L), (B, T)
        logits = self(src, tgt if teacher else None)  # (B, T, vocab)
        loss = self.loss_fn(logits.flatten(0, 1), tgt.flatten())  # mean over every token
        hit = logits.argmax(-1) == tgt  # (B, T)
        n = len(tgt)  # counts as host ints: no host-to-device copy in the step
        stats = {"loss": loss * n, "n": n, "acc": hit.sum(), "tokens": tgt.numel(), "seq_acc": hit.all(-1).sum()}
        self.add(stage, stats)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Teacher-forced loss, averaged over the minibatch's tokens."""
        return self._step("train", batch, teacher=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Greedy decoding: the model's own predictions feed the next step."""
        self._step("val", batch, teacher=False)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Greedy decoding on the test split."""
        self._step("test", batch, teacher=False)
