"""The population's training loop: per-member batches from per-member seeds, one step for all.

Member ``i`` visits the training split in the order the sequential run with its seed visits it
(:class:`dlsuite.data.base.TensorBatches`: a ``randperm`` from ``seed + epoch``), so with dropout off
and no augmentation a population reproduces its members' sequential runs to float rounding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from dlsuite.config import RunConfig
from dlsuite.population.diagnostics import PopulationDiagnostics
from dlsuite.population.group import population_precision
from dlsuite.population.members import Stacked, Tensors, member_losses, member_model
from dlsuite.population.metrics import accuracy, confusion, macro_f1
from dlsuite.population.optim import Coefficients, PopulationOptimizer, clip_gradients
from dlsuite.population.schedule import rate_table


@dataclass
class History:
    """Per-epoch figures, one list per epoch of P values (member order; NaN once a member has left)."""

    train_loss: list[list[float]] = field(default_factory=list)
    val_loss: list[list[float]] = field(default_factory=list)
    val_acc: list[list[float]] = field(default_factory=list)
    train_acc: list[list[float]] = field(default_factory=list)
    val_f1: list[list[float]] = field(default_factory=list)
    lr: list[list[float]] = field(default_factory=list)
    """Each member's learning rate at the epoch's first step (what a sequential run logs as ``lr``)."""
    diagnostics: list[dict[str, list[float]]] = field(default_factory=list)
    """The diagnostics' numbers of each epoch (``tracking.diagnostics``), name -> P values."""
    epoch_seconds: list[float] = field(default_factory=list)
    """Wall time of each epoch (training and validation) for the whole population."""
    steps: int = 0
    """Optimiser steps taken (one step updates every member)."""


@dataclass
class Scores:
    """Each member's loss, accuracy and macro-F1 ``(P,)`` on a split, and its confusion matrices ``(P, C, C)``."""

    loss: torch.Tensor
    acc: torch.Tensor
    f1: torch.Tensor
    confusion: torch.Tensor

    def member(self, i: int, stage: str) -> dict[str, float]:
        """Member ``i``'s numbers named as the task logs them (``val_loss``, ``test_acc``, ...)."""
        return {
            f"{stage}_loss": float(self.loss[i]),
            f"{stage}_acc": float(self.acc[i]),
            f"{stage}_f1": float(self.f1[i]),
        }


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
    diagnostics: PopulationDiagnostics | None = None
    best: Tensors | None = None
    """Each member's parameters and buffers at its best epoch (``trainer.checkpoint_monitor``), the
    weights a sequential run tests (``trainer.test_checkpoint=best``)."""
    best_score: torch.Tensor | None = None
    last_penalty: torch.Tensor | None = None
    """Each member's L1/L2 penalty at the last training step ``(P,)`` (diagnostics' ``penalty``)."""
    bf16: bool = False
    """Forward passes and losses under bfloat16 autocast, as Lightning's ``bf16-mixed`` runs them."""

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
        if self.diagnostics is not None:
            self.diagnostics.keep(index)
        if self.best is not None and self.best_score is not None:
            self.best = {k: v[index.to(v.device)] for k, v in self.best.items()}
            self.best_score = self.best_score[index.to(self.best_score.device)]
        if self.last_penalty is not None:
            self.last_penalty = self.last_penalty[index.to(self.last_penalty.device)]

    def load_best(self) -> None:
        """Give the stack each member's best weights (after training: they are no optimiser's leaves)."""
        if self.best is not None:
            st = self.stacked
            st.params = {k: self.best[k].clone() for k in st.params}
            st.buffers = {k: self.best[k].clone() for k in st.buffers}

    def remember_best(self, score: torch.Tensor, mode: str) -> None:
        """Keep each member's weights where ``score`` ``(P,)`` beats its best so far (strictly, as
        Lightning's ``ModelCheckpoint`` does; the first epoch always counts)."""
        state = {**self.stacked.params, **self.stacked.buffers}
        score = score.to(torch.float64)
        if self.best is None or self.best_score is None:
            self.best = {k: v.detach().clone() for k, v in state.items()}
            self.best_score = score.clone()
            return
        better = score > self.best_score if mode == "max" else score < self.best_score
        better &= ~torch.isnan(score)
        better |= torch.isnan(self.best_score) & ~torch.isnan(score)  # a NaN best gives way to any number
        for k, v in state.items():
            mask = better.to(v.device).view(-1, *([1] * (v.dim() - 1)))
            self.best[k] = torch.where(mask, v.detach(), self.best[k])
        self.best_score = torch.where(better, score, self.best_score)

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
    cfgs: Sequence[RunConfig],
    input_shape: tuple[int, ...],
    num_classes: int,
    device: str | torch.device = "cpu",
    grouped: bool = True,
) -> Population:
    """Initialise every member as its sequential run would, stack them and build the optimiser.

    The configs must share their structure (:func:`dlsuite.population.group.structure_key`).
    ``grouped=False``: the forward always runs under ``vmap`` (:class:`~dlsuite.population.members.Stacked`).
    """
    models = [
        member_model(m.name, dict(m.knobs), input_shape, num_classes, m.init, m.init_std, c.seed)
        for c, m in ((c, c.model) for c in cfgs)
    ]
    stacked = Stacked(models, grouped).to(device)
    first = cfgs[0].optim
    opt = PopulationOptimizer(
        stacked.params, first.name, Coefficients.of([c.optim for c in cfgs]), first.decay_norm_and_bias
    )
    smoothing = torch.tensor([c.regularization.label_smoothing for c in cfgs], device=device)
    clip = torch.tensor([c.optim.grad_clip or math.inf for c in cfgs], dtype=torch.float64)
    l1 = torch.tensor([c.regularization.l1 for c in cfgs], device=device)
    l2 = torch.tensor([c.regularization.l2 for c in cfgs], device=device)
    diag_cfg = cfgs[0].tracking.diagnostics
    diagnostics = PopulationDiagnostics(diag_cfg, stacked.params, stacked.template) if diag_cfg.enabled else None
    bf16 = population_precision(cfgs[0]) == "bf16-mixed"
    return Population(list(cfgs), stacked, opt, smoothing, clip, first.grad_clip_method, l1, l2, diagnostics, bf16=bf16)


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """Lightning's ``bf16-mixed``: the forward and the loss under bfloat16 autocast (off: float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def epoch_order(seeds: Sequence[int], epoch: int, n: int, device: torch.device) -> torch.Tensor:
    """``(P, n)``: each member's permutation of the training split for ``epoch`` (as TensorBatches draws it)."""
    rows = [torch.randperm(n, generator=torch.Generator().manual_seed(s + epoch)) for s in seeds]
    return torch.stack(rows).to(device)


@torch.no_grad()
def evaluate(
    stacked: Stacked,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    smoothing: torch.Tensor | None = None,
    state: Tensors | None = None,
    bf16: bool = False,
) -> Scores:
    """Each member's mean loss (with its label smoothing, as the task's loss), accuracy, macro-F1 and
    confusion matrix on ``(x, y)``; with ``state`` (stacked parameters and buffers, e.g. the best
    epoch's) instead of the current weights."""
    size = stacked.size if state is None else len(next(iter(state.values())))
    loss = torch.zeros(size, device=x.device, dtype=torch.float64)
    conf: torch.Tensor | None = None
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        with autocast(x.device, bf16):
            logits = stacked.forward_eval(xb, state)  # (P, B, C)
            target = yb.expand(size, -1)
            loss += member_losses(logits, target, smoothing).double() * len(yb)
        c = confusion(logits, yb)
        conf = c if conf is None else conf + c
    assert conf is not None, "evaluate needs at least one example"
    return Scores(loss / len(x), accuracy(conf), macro_f1(conf), conf)


def train_step(
    pop: Population,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: torch.Tensor | None = None,
    moment: torch.Tensor | None = None,
    correct: torch.Tensor | None = None,
    sample: bool = False,
) -> torch.Tensor:
    """One update of every member on its own batch ``x`` ``(P, B, ...)``, ``y`` ``(P, B)``.

    Returns each member's data loss ``(P,)`` (what the task logs); the update also follows the L1/L2
    penalties.

    ``lr`` and ``moment`` are the members' scheduled learning rates and momentum/``beta1`` ``(P,)``.
    ``correct`` ``(P,)``, when given, gets each member's correct predictions added (training accuracy).
    ``sample``: a step the diagnostics sample (gradient norms, activation statistics).
    """
    st = pop.stacked
    diag = pop.diagnostics if sample else None
    with autocast(x.device, pop.bf16):
        if diag is not None and diag.acts:
            logits, buffers, stats = st.forward_train_probed(x, [name for name, _ in diag.acts])
            diag.add_activations(stats)
        else:
            logits, buffers = st.forward_train(x)
        losses = member_losses(logits, y, pop.smoothing)
    if bool(pop.l1.any() or pop.l2.any()):
        penalty = pop.penalty()
        pop.last_penalty = penalty.detach()
        total = losses + penalty
    else:
        total = losses
    pop.optimizer.zero_grad()
    # Members share no parameter, so the gradient of the sum is each member's own gradient.
    total.sum().backward()
    if diag is not None:
        diag.add_gradients(st.params)  # before clipping, as the callback samples them
    if bool(torch.isfinite(pop.clip).any()):
        clip_gradients(st.params, pop.clip, pop.clip_method)
    pop.optimizer.step(lr, moment)
    st.buffers = {k: v.detach() for k, v in buffers.items()}
    if correct is not None:
        correct += (logits.detach().argmax(-1) == y).sum(1)
    return losses.detach()


def fit(
    pop: Population,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    epochs: int | None = None,
    on_epoch: Callable[[int, History], Sequence[int] | None] | None = None,
    check: Callable[[], None] | None = None,
) -> History:
    """Train every member for ``epochs`` (default: the configs' ``trainer.max_epochs``) on device-resident data.

    The reported training loss of an epoch is each member's loss averaged over its examples.
    ``on_epoch(epoch, history)`` is called after each epoch's validation (to report and prune); it may
    return the members (indices into the original ``pop.cfgs``) to keep training: the others are
    dropped from the population, and their later epochs in the history are NaN. Training stops when
    none is left. With validation, each member's best weights (``trainer.checkpoint_monitor``) are kept
    in ``pop.best``. ``check()`` is called after every step: it raises to stop (a recorded signal whose
    exception was dropped, :class:`dlsuite.tracking.runs.Signals`).
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
    monitor, mode = cfg.trainer.checkpoint_monitor, cfg.trainer.checkpoint_mode

    def row(values: torch.Tensor) -> list[float]:
        out = [math.nan] * size
        for i, v in zip(active, values.tolist(), strict=True):
            out[i] = v
        return out

    for epoch in range(epochs):
        started = time.perf_counter()
        hist.lr.append(row(rates[epoch * steps]))
        order = epoch_order(pop.seeds, epoch, n, x.device)
        total = torch.zeros(st.size, device=x.device, dtype=torch.float64)
        correct = torch.zeros(st.size, device=x.device, dtype=torch.long)
        for i, start in enumerate(range(0, n, bs)):
            idx = order[:, start : start + bs]  # (P, B)
            t = epoch * steps + i
            sample = pop.diagnostics is not None and pop.diagnostics.sampled(i)
            losses = train_step(pop, x[idx], y[idx], rates[t], moments[t], correct, sample)
            total += losses.double() * idx.shape[1]
            if check is not None:
                check()
        hist.steps += steps
        hist.train_loss.append(row(total / n))
        hist.train_acc.append(row(correct.double() / n))
        if pop.diagnostics is not None:
            diag = pop.diagnostics.epoch_row(st.params, pop.last_penalty)
            hist.diagnostics.append({k: row(v) for k, v in diag.items()})
        if val is not None:
            scores = evaluate(st, val[0], val[1], cfg.data.eval_batch_size, pop.smoothing, bf16=pop.bf16)
            hist.val_loss.append(row(scores.loss))
            hist.val_acc.append(row(scores.acc))
            hist.val_f1.append(row(scores.f1))
            watched = {"val_loss": scores.loss, "val_acc": scores.acc, "val_f1": scores.f1}.get(monitor)
            if watched is not None:
                pop.remember_best(watched, mode)
        hist.epoch_seconds.append(time.perf_counter() - started)
        keep = on_epoch(epoch, hist) if on_epoch is not None else None
        if keep is not None and list(keep) != active:
            if not keep:
                break
            positions = [active.index(i) for i in keep]
            pop.keep(positions)
            rates, moments = rates[:, positions], moments[:, positions]
            active = list(keep)
    return hist
