"""The sequential run's per-epoch diagnostics (``dlsuite.techniques.diagnostics``), for every member at once.

Same names and the same sampling as the :class:`~dlsuite.techniques.diagnostics.Diagnostics` callback:
per-layer gradient norms (before clipping) and activation health sampled every ``every_n_steps`` steps
(and each epoch's first), weight norms and sparsity at the epoch's end, and ``penalty`` when L1/L2
penalties are on. Activation statistics come out of the vmapped forward itself (forward hooks that
return their numbers), so a population's sampled step stays one call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dlsuite.config import DiagnosticsConfig
from dlsuite.techniques.diagnostics import activation_statistic

_ACTS = (nn.ReLU, nn.Sigmoid, nn.Tanh)
Row = dict[str, torch.Tensor]
"""An epoch's numbers, each ``(P,)``."""


def activation_modules(template: nn.Module) -> list[tuple[str, str]]:
    """``(module name, kind)`` of every ReLU (``dead_relu``) and sigmoid/tanh (``saturation``)."""
    return [
        (name, "dead_relu" if isinstance(m, nn.ReLU) else "saturation")
        for name, m in template.named_modules()
        if isinstance(m, _ACTS)
    ]


def activation_hook(module: nn.Module, sink: list[torch.Tensor]) -> Callable[..., None]:
    """A forward hook appending the module's statistic (as the callback computes it) to ``sink``."""

    def hook(mod: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        sink.append(activation_statistic(module, out.detach()))

    return hook


class PopulationDiagnostics:
    """Sums sampled gradient norms and activation statistics per member; assembles each epoch's row."""

    def __init__(self, cfg: DiagnosticsConfig, params: dict[str, torch.Tensor], template: nn.Module) -> None:
        self.cfg = cfg
        # Per member a stacked tensor of dim d is a tensor of dim d - 1 (the callback takes dim >= 2).
        self.weights = [k for k, p in params.items() if p.dim() - 1 >= 2]
        self.acts = activation_modules(template)
        self._grad: torch.Tensor | None = None
        self._grad_n = 0
        self._act: torch.Tensor | None = None
        self._act_n = 0

    def sampled(self, step_in_epoch: int) -> bool:
        """Whether this step is sampled (every N steps and the epoch's first, as the callback does)."""
        return step_in_epoch % self.cfg.every_n_steps == 0

    def add_gradients(self, params: dict[str, torch.Tensor]) -> None:
        """Each member's per-layer gradient norms now (call before clipping)."""
        grads = [params[k].grad for k in self.weights]
        norms = torch.stack(
            [
                torch.linalg.vector_norm(g.flatten(1), dim=1).float()
                if g is not None
                else params[k].new_zeros(params[k].shape[0])
                for k, g in zip(self.weights, grads, strict=True)
            ]
        )  # (layers, P)
        self._grad = norms if self._grad is None else self._grad + norms
        self._grad_n += 1

    def add_activations(self, stats: torch.Tensor) -> None:
        """``(P, modules)`` statistics of one sampled forward."""
        self._act = stats if self._act is None else self._act + stats
        self._act_n += 1

    @torch.no_grad()
    def epoch_row(self, params: dict[str, torch.Tensor], penalty: torch.Tensor | None) -> Row:
        """The epoch's numbers for every member, named as the callback names them; resets the sums."""
        row: Row = {}
        sizes, l1s, sparse = [], [], []
        for k in self.weights:
            w = params[k].detach().float().flatten(1)  # (P, n)
            name = k.removesuffix(".weight")
            row[f"weight_norm/{name}"] = torch.linalg.vector_norm(w, dim=1)
            s = (w.abs() < self.cfg.sparsity_threshold).float().mean(1)
            row[f"sparsity/{name}"] = s
            sparse.append(s * w.shape[1])
            l1s.append(w.abs().sum(1))
            sizes.append(w.shape[1])
        if self.weights:
            row["weight_l1"] = torch.stack(l1s).sum(0)
            row["weight_sparsity"] = torch.stack(sparse).sum(0) / max(sum(sizes), 1)
        if self._grad is not None:
            g = self._grad / max(self._grad_n, 1)
            for i, k in enumerate(self.weights):
                row[f"grad_norm/{k.removesuffix('.weight')}"] = g[i]
            row["grad_norm_ratio"] = torch.where(g[-1] > 0, g[0] / g[-1], torch.full_like(g[0], float("nan")))
        if self._act is not None and self.acts:
            a = self._act / max(self._act_n, 1)  # (P, modules)
            for j, (name, kind) in enumerate(self.acts):
                row[f"{kind}/{name}"] = a[:, j]
            for kind in ("dead_relu", "saturation"):
                cols = [j for j, (_, k) in enumerate(self.acts) if k == kind]
                if cols:
                    row[f"{kind}_mean"] = a[:, cols].mean(1)
        if penalty is not None:
            row["penalty"] = penalty.float()
        self._grad, self._grad_n, self._act, self._act_n = None, 0, None, 0
        return row

    def keep(self, index: torch.Tensor) -> None:
        """Keep the sums of the members at ``index`` (members left the population)."""
        if self._grad is not None:
            self._grad = self._grad[:, index.to(self._grad.device)]
        if self._act is not None:
            self._act = self._act[index.to(self._act.device)]
