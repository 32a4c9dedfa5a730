"""Optimisers over stacked parameters, with one coefficient per member.

``torch.optim`` takes one learning rate (and momentum, weight decay) per parameter group; a stacked
parameter ``(P, ...)`` holds P members that each need their own. Here every coefficient is a length-P
tensor broadcast as ``(P, 1, ...)``, and the updates follow ``torch.optim``'s single-tensor formulas
(``torch/optim/sgd.py``, ``adam.py``, torch 2.14) term by term, so that member ``i`` takes the step
``torch.optim`` would take for it. As in :mod:`dlsuite.techniques.optim`, weight decay applies only
to tensors of two or more dimensions per member unless ``decay_norm_and_bias``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dlsuite.config import OptimConfig

#: Optimisers the population can run; others fall back to the sequential runner.
POPULATION_OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass
class Coefficients:
    """Per-member optimiser settings, each a float64 tensor of length P (bools as 0/1)."""

    lr: torch.Tensor
    weight_decay: torch.Tensor
    momentum: torch.Tensor
    nesterov: torch.Tensor
    beta1: torch.Tensor
    beta2: torch.Tensor
    eps: torch.Tensor

    @classmethod
    def of(cls, configs: Sequence[OptimConfig]) -> Coefficients:
        """The coefficients of each member's ``optim`` section, in order."""

        def col(values: Sequence[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float64)

        return cls(
            lr=col([c.lr for c in configs]),
            weight_decay=col([c.weight_decay for c in configs]),
            momentum=col([c.momentum for c in configs]),
            nesterov=col([float(c.nesterov) for c in configs]),
            beta1=col([c.betas[0] for c in configs]),
            beta2=col([c.betas[1] for c in configs]),
            eps=col([c.eps for c in configs]),
        )


def _per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` ``(P,)`` as ``(P, 1, ...)`` in ``like``'s dtype and device, to broadcast against it."""
    return values.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))


@torch.no_grad()
def clip_gradients(params: dict[str, torch.Tensor], threshold: torch.Tensor, method: str) -> None:
    """Clip each member's gradients as Lightning's ``gradient_clip_val`` does for one model.

    ``method`` ``norm``: ``torch.nn.utils.clip_grad_norm_`` over all of a member's parameters (the
    norm of the per-tensor norms; every gradient scaled by ``min(1, threshold / (norm + 1e-6))``);
    ``value``: ``clip_grad_value_``. A threshold of ``inf`` (``optim.grad_clip`` unset) leaves the
    member's gradients exactly as they are.
    """
    grads = [p.grad for p in params.values() if p.grad is not None]
    if not grads:
        return
    if method == "value":
        for g in grads:
            bound = _per_member(threshold, g)
            g.clamp_(min=-bound, max=bound)
        return
    norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # (tensors, P)
    total = torch.linalg.vector_norm(norms, dim=0)  # (P,)
    coef = (threshold.to(total.device, total.dtype) / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(_per_member(coef, g))


class PopulationOptimizer:
    """SGD (momentum, Nesterov), Adam or AdamW over a dict of stacked leaf parameters.

    Args:
        params: stacked parameters ``(P, ...)`` whose ``.grad`` the step reads.
        name: ``sgd``, ``adam`` or ``adamw``.
        coeffs: per-member settings; ``step(lr)`` takes the current learning rates (schedules).
        decay_all: decay 1-D tensors too (``optim.decay_norm_and_bias``).
    """

    def __init__(
        self, params: dict[str, torch.Tensor], name: str, coeffs: Coefficients, decay_all: bool = False
    ) -> None:
        if name not in POPULATION_OPTIMIZERS:
            raise ValueError(f"no population optimiser {name!r}; these exist: {', '.join(POPULATION_OPTIMIZERS)}")
        self.params = params
        self.name = name
        self.c = coeffs
        self.steps = 0
        # Per member a stacked tensor of dim d is a tensor of dim d - 1.
        self.decays = {k: decay_all or p.dim() - 1 >= 2 for k, p in params.items()}
        self.state: dict[str, dict[str, torch.Tensor]] = {}

    def keep(self, index: torch.Tensor, params: dict[str, torch.Tensor]) -> None:
        """Keep the members at ``index``: their coefficients and state, over the new stacked ``params``."""
        self.params = params
        c = self.c
        for name in ("lr", "weight_decay", "momentum", "nesterov", "beta1", "beta2", "eps"):
            setattr(c, name, getattr(c, name)[index])
        self.state = {k: {name: t[index.to(t.device)] for name, t in st.items()} for k, st in self.state.items()}

    def zero_grad(self) -> None:
        """Drop the gradients (as ``set_to_none=True``)."""
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self, lr: torch.Tensor | None = None, moment: torch.Tensor | None = None) -> None:
        """One update of every member with learning rates ``lr`` ``(P,)`` (default: the base rates).

        ``moment`` ``(P,)`` replaces SGD's momentum or Adam's ``beta1`` from this step on, as a
        schedule that cycles them (one-cycle) sets them in ``torch.optim``'s parameter groups.
        """
        lr = self.c.lr if lr is None else lr
        if moment is not None:
            if self.name == "sgd":
                self.c.momentum = moment
            else:
                self.c.beta1 = moment
        self.steps += 1
        c = self.c
        # Every per-member factor is computed once per step in float64 (torch computes them in Python
        # floats) and cast once; each parameter then takes a (P, 1, ...) view of it.
        if self.name == "sgd":
            factors = {"lr": lr, "wd": c.weight_decay, "momentum": c.momentum, "nesterov": c.nesterov}
        else:
            factors = {
                "wd": c.weight_decay,
                "keep": 1 - lr * c.weight_decay,  # AdamW: param.mul_(1 - lr * weight_decay)
                "1-beta1": 1 - c.beta1,
                "beta2": c.beta2,
                "1-beta2": 1 - c.beta2,
                "step_size": lr / (1 - c.beta1**self.steps),
                "bc2_sqrt": (1 - c.beta2**self.steps).sqrt(),
                "eps": c.eps,
            }
        first = next(iter(self.params.values()))
        cast = {k: v.to(first.device, first.dtype) for k, v in factors.items()}
        for k, p in self.params.items():
            if p.grad is None:
                continue
            shape = (-1, *([1] * (p.dim() - 1)))
            f = {name: v.view(shape) for name, v in cast.items()}
            if self.name == "sgd":
                self._sgd(k, p, p.grad, f, self.decays[k])
            else:
                self._adam(k, p, p.grad, f, self.decays[k], decoupled=self.name == "adamw")

    def _sgd(self, k: str, p: torch.Tensor, grad: torch.Tensor, f: dict[str, torch.Tensor], decay: bool) -> None:
        if decay:
            grad = grad + f["wd"] * p  # grad.add(param, alpha=weight_decay)
        st = self.state.setdefault(k, {})
        if "buf" not in st:  # torch clones the first gradient: momentum * 0 + grad is that exactly
            st["buf"] = torch.zeros_like(p)
        buf = st["buf"]
        buf.mul_(f["momentum"]).add_(grad)  # dampening 0; a member with momentum 0 gets buf = grad
        grad = torch.where(f["nesterov"].bool(), grad + f["momentum"] * buf, buf)
        p.sub_(f["lr"] * grad)

    def _adam(
        self, k: str, p: torch.Tensor, grad: torch.Tensor, f: dict[str, torch.Tensor], decay: bool, decoupled: bool
    ) -> None:
        if decay and decoupled:
            p.mul_(f["keep"])
        elif decay:
            grad = grad + f["wd"] * p  # Adam: L2 added to the gradient
        st = self.state.setdefault(k, {})
        if "exp_avg" not in st:
            st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        exp_avg, exp_avg_sq = st["exp_avg"], st["exp_avg_sq"]
        exp_avg.lerp_(grad, f["1-beta1"])
        exp_avg_sq.mul_(f["beta2"]).addcmul_(grad, grad * f["1-beta2"])
        denom = (exp_avg_sq.sqrt() / f["bc2_sqrt"]).add_(f["eps"])
        p.sub_(f["step_size"] * exp_avg / denom)
