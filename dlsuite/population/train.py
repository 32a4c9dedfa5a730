"""The population's training loop: per-member batches from per-member seeds, one step for all.

Member ``i`` visits the training split in the order the sequential run with its seed visits it
(:class:`dlsuite.data.base.TensorBatches`: a ``randperm`` from ``seed + epoch``), so with dropout off
and no augmentation a population reproduces its members' sequential runs to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from dlsuite.config import RunConfig
from dlsuite.population.members import Stacked, member_losses, member_model
from dlsuite.population.optim import Coefficients, PopulationOptimizer, clip_gradients
from dlsuite.population.schedule import rate_table


@dataclass
class History:
    """Per-epoch figures, one list per epoch of P values (member order)."""

    train_loss: list[list[float]] = field(default_factory=list)
    val_loss: list[list[float]] = field(default_factory=list)
    val_acc: list[list[float]] = field(default_factory=list)
    train_acc: list[list[float]] = field(default_factory=list)
    """Accuracy on the epoch's training batches, in training mode (as the sequential task logs it)."""


@dataclass
class Population:
    """Stacked members of one structure, their optimiser and their configs."""

    cfgs: list[RunConfig]
    stacked: Stacked
    optimizer: PopulationOptimizer
    smoothing: torch.Tensor
    """Each member's label smoothing ``(P,)``."""
    clip: torch.Tensor
    """Each member's gradient-clipping threshold ``(P,)``, ``inf`` where it clips nothing."""
    clip_method: str
    l1: torch.Tensor
    """Each member's L1 penalty strength ``(P,)`` (on >= 2-D weights, as ``regularization.l1``)."""
    l2: torch.Tensor
    """Each member's L2 penalty strength ``(P,)``."""

    @property
    def seeds(self) -> list[int]:
        """Each member's seed (weights, batch order, dropout masks)."""
        return [c.seed for c in self.cfgs]

    def keep(self, positions: Sequence[int]) -> None:
        """Keep only the members at ``positions`` (in order): pruned members stop costing compute."""
        index = torch.tensor(list(positions), dtype=torch.long)
        self.stacked.keep(index)
        self.optimizer.keep(index, self.stacked.params)
        self.cfgs = [self.cfgs[i] for i in positions]
        self.smoothing = self.smoothing[index.to(self.smoothing.device)]
        self.clip = self.clip[index]
        self.l1, self.l2 = self.l1[index.to(self.l1.device)], self.l2[index.to(self.l2.device)]

    def penalty(self) -> torch.Tensor:
        """Each member's ``l1 * sum|w| + l2 * sum w^2`` over its >= 2-D weights ``(P,)``."""
        weights = [p for p in self.stacked.params.values() if p.dim() - 1 >= 2]
        total = weights[0].new_zeros(self.stacked.size)
        if bool(self.l1.any()):
            total = total + self.l1 * sum(w.abs().flatten(1).sum(1) for w in weights)
        if bool(self.l2.any()):
            total = total + self.l2 * sum(w.pow(2).flatten(1).sum(1) for w in weights)
        return total


def build_population(
    cfgs: Sequence[RunConfig], input_shape: tuple[int, ...], num_classes: int, device: str | torch.device = "cpu"
) -> Population:
    """Initialise every member as its sequential run would, stack them and build the optimiser.

    The configs must share their structure (:func:`dlsuite.population.group.structure_key`).
    """
    models = [
        member_model(m.name, dict(m.knobs), input_shape, num_classes, m.init, m.init_std, c.seed)
        for c, m in ((c, c.model) for c in cfgs)
    ]
    stacked = Stacked(models).to(device)
    first = cfgs[0].optim
    opt = PopulationOptimizer(
        stacked.params, first.name, Coefficients.of([c.optim for c in cfgs]), first.decay_norm_and_bias
    )
    smoothing = torch.tensor([c.regularization.label_smoothing for c in cfgs], device=device)
    clip = torch.tensor([c.optim.grad_clip or math.inf for c in cfgs], dtype=torch.float64)
    l1 = torch.tensor([c.regularization.l1 for c in cfgs], device=device)
    l2 = torch.tensor([c.regularization.l2 for c in cfgs], device=device)
    return Population(list(cfgs), stacked, opt, smoothing, clip, first.grad_clip_method, l1, l2)


def epoch_order(seeds: Sequence[int], epoch: int, n: int, device: torch.device) -> torch.Tensor:
    """``(P, n)``: each member's permutation of the training split for ``epoch`` (as TensorBatches draws it)."""
    rows = [torch.randperm(n, generator=torch.Generator().manual_seed(s + epoch)) for s in seeds]
    return torch.stack(rows).to(device)


@torch.no_grad()
def evaluate(
    stacked: Stacked, x: torch.Tensor, y: torch.Tensor, batch_size: int, smoothing: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each member's mean loss (with its label smoothing, as the task's loss) and accuracy ``(P,)`` on ``(x, y)``."""
    loss = torch.zeros(stacked.size, device=x.device, dtype=torch.float64)
    correct = torch.zeros_like(loss)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        logits = stacked.forward_eval(xb)  # (P, B, C)
        target = yb.expand(stacked.size, -1)
        loss += member_losses(logits, target, smoothing).double() * len(yb)
        correct += (logits.argmax(-1) == target).sum(1).double()
    return loss / len(x), correct / len(x)


def train_step(
    pop: Population,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: torch.Tensor | None = None,
    moment: torch.Tensor | None = None,
    correct: torch.Tensor | None = None,
) -> torch.Tensor:
    """One update of every member on its own batch ``x`` ``(P, B, ...)``, ``y`` ``(P, B)``.

    Returns each member's data loss ``(P,)`` (what the task logs); the update also follows the L1/L2
    penalties.

    ``lr`` and ``moment`` are the members' scheduled learning rates and momentum/``beta1`` ``(P,)``.
    ``correct`` ``(P,)``, when given, is increased by each member's number of correct predictions.
    """
    st = pop.stacked
    logits, buffers = st.forward_train(x)
    losses = member_losses(logits, y, pop.smoothing)
    if correct is not None:
        correct += (logits.detach().argmax(-1) == y).sum(1)
    total = losses + pop.penalty() if bool(pop.l1.any() or pop.l2.any()) else losses
    pop.optimizer.zero_grad()
    # Members share no parameter, so the gradient of the sum is each member's own gradient.
    total.sum().backward()
    if bool(torch.isfinite(pop.clip).any()):
        clip_gradients(st.params, pop.clip, pop.clip_method)
    pop.optimizer.step(lr, moment)
    st.buffers = {k: v.detach() for k, v in buffers.items()}
    return losses.detach()


def fit(
    pop: Population,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    epochs: int | None = None,
    on_epoch: Callable[[int, History], Sequence[int] | None] | None = None,
) -> History:
    """Train every member for ``epochs`` (default: the configs' ``trainer.max_epochs``) on device-resident data.

    The reported training loss of an epoch is each member's loss averaged over its examples.
    ``on_epoch(epoch, history)`` is called after each epoch's validation (to report and prune); it may
    return the members (indices into the original ``pop.cfgs``) to keep training: the others are
    dropped from the population, and their later epochs in the history are NaN. Training stops when
    none is left.
    """
    cfg = pop.cfgs[0]
    epochs = cfg.trainer.max_epochs if epochs is None else epochs
    x, y = train
    n, bs = len(x), cfg.data.batch_size
    steps = -(-n // bs)
    rates, moments = rate_table([c.optim for c in pop.cfgs], epochs, steps)
    st, hist = pop.stacked, History()
    size = st.size
    active = list(range(size))  # original index of each current member

    def row(values: torch.Tensor) -> list[float]:
        out = [math.nan] * size
        for i, v in zip(active, values.tolist(), strict=True):
            out[i] = v
        return out

    for epoch in range(epochs):
        order = epoch_order(pop.seeds, epoch, n, x.device)
        total = torch.zeros(st.size, device=x.device, dtype=torch.float64)
        correct = torch.zeros_like(total)
        for i, start in enumerate(range(0, n, bs)):
            idx = order[:, start : start + bs]  # (P, B)
            t = epoch * steps + i
            losses = train_step(pop, x[idx], y[idx], rates[t], moments[t], correct)
            total += losses.double() * idx.shape[1]
        hist.train_loss.append(row(total / n))
        hist.train_acc.append(row(correct / n))
        if val is not None:
            vl, va = evaluate(st, val[0], val[1], cfg.data.eval_batch_size, pop.smoothing)
            hist.val_loss.append(row(vl))
            hist.val_acc.append(row(va))
        keep = on_epoch(epoch, hist) if on_epoch is not None else None
        if keep is not None and list(keep) != active:
            if not keep:
                break
            positions = [active.index(i) for i in keep]
            pop.keep(positions)
            rates, moments = rates[:, positions], moments[:, positions]
            active = list(keep)
    return hist
