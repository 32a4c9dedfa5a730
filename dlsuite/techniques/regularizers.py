"""What the training step does besides forward and loss: augmentation, mixup / cutmix, L1 / L2 penalties.

:class:`TrainObjective` is called by a task's ``training_step`` only, so validation and test data are never
augmented or mixed, and the penalties never enter the validation loss (the train-validation gap compares like
with like: the data loss).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from dlsuite.config import RunConfig
from dlsuite.data.augment import Augmenter

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def penalized_weights(model: nn.Module) -> list[torch.Tensor]:
    """The tensors L1 / L2 penalties act on: trainable weights of two or more dimensions (not biases or
    normalisation scales), the same rule as weight decay."""
    return [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]


def weight_penalty(weights: Sequence[torch.Tensor], l1: float, l2: float) -> torch.Tensor:
    """``l1 * sum|w| + l2 * sum w^2`` over ``weights`` (the elastic net when both are set)."""
    total = weights[0].new_zeros(())
    if l1:
        total = total + l1 * sum(w.abs().sum() for w in weights)
    if l2:
        total = total + l2 * sum(w.pow(2).sum() for w in weights)
    return total


class BatchMixer:
    """Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on a training batch.

    The mixing weight is drawn on the host (no device sync); the partner of each example is a random
    permutation of the batch. CutMix cuts a rectangle from images and an interval from sequences.
    """

    def __init__(self, mixup_alpha: float, cutmix_alpha: float, prob: float, seed: int = 0) -> None:
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.rng = torch.Generator().manual_seed(seed + 7919)

    def __bool__(self) -> bool:
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.prob > 0

    def _beta(self, alpha: float) -> float:
        # Beta(a, a) from two Gammas, on the host generator so runs repeat with their seed.
        g = torch._standard_gamma(torch.full((2,), alpha), generator=self.rng)
        return float(g[0] / g.sum())

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.rng))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """``(mixed x, partner permutation, weight of the original targets)``, or None when not mixing."""
        if not self or self._uniform() >= self.prob:
            return None
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or self._uniform() < 0.5)
        perm = torch.randperm(x.shape[0], device=x.device)
        if not use_cutmix:
            lam = self._beta(self.mixup_alpha)
            return x * lam + x[perm] * (1 - lam), perm, lam
        lam = self._beta(self.cutmix_alpha)
        out = x.clone()
        sizes = x.shape[2:]
        cut = math.sqrt(1 - lam) if len(sizes) == 2 else 1 - lam  # side fraction so the area is 1 - lam
        box = []
        for n in sizes:
            length = int(n * cut)
            centre = int(self._uniform() * n)
            lo, hi = max(centre - length // 2, 0), min(centre + length - length // 2, n)
            box.append(slice(lo, hi))
        region = (slice(None), slice(None), *box)
        out[region] = x[perm][region]
        area = math.prod(s.stop - s.start for s in box) / math.prod(sizes)
        return out, perm, 1.0 - area


class TrainObjective:
    """Augment, mix, forward, loss and penalty for one training batch.

    Args:
        cfg: the run config (``data.augment``, ``regularization``).
        input_shape: one example's shape, to check the augmentations fit the data.
    """

    def __init__(self, cfg: RunConfig, input_shape: Sequence[int]) -> None:
        self.augment = Augmenter([(a.name, a.params) for a in cfg.data.augment], input_shape)
        r = cfg.regularization
        self.mixer = BatchMixer(r.mixup_alpha, r.cutmix_alpha, r.mix_prob, cfg.seed)
        self.l1, self.l2 = r.l1, r.l2
        self.last_penalty: torch.Tensor | None = None

    def __call__(
        self, model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, data loss, loss to minimise)`` for a training batch ``x``, ``y``."""
        if self.augment:
            x = self.augment(x)
        mixed = self.mixer(x)
        if mixed is None:
            logits = model(x)
            loss = loss_fn(logits, y)
        else:
            x, perm, lam = mixed
            logits = model(x)
            # Mixing the losses equals the loss of the mixed targets for every loss linear in the target.
            loss = lam * loss_fn(logits, y) + (1 - lam) * loss_fn(logits, y[perm])
        total = loss
        if self.l1 or self.l2:
            penalty = weight_penalty(penalized_weights(model), self.l1, self.l2)
            self.last_penalty = penalty.detach()
            total = loss + penalty
        return logits, loss, total
