"""Diagnostics that explain training: gradient flow, activation health, weights, overfitting.

Per epoch, logged to MLflow as metrics:

- ``grad_norm/<layer>``: mean L2 norm of each weight tensor's gradient (before clipping), so vanishing
  (early layers near zero) and exploding gradients show; ``grad_norm_ratio`` = first layer / last layer.
- ``dead_relu/<module>``: fraction of ReLU units (channels or features) that output zero for a whole batch;
  ``saturation/<module>``: fraction of sigmoid outputs below 0.01 or above 0.99 (tanh: beyond +-0.99), where
  the derivative is nearly zero.
- ``weight_norm/<layer>``, ``sparsity/<layer>`` (fraction of weights below ``sparsity_threshold``), and
  overall ``weight_sparsity``, ``weight_l1``; ``penalty`` when L1 / L2 penalties are on.

Gradients and activations are sampled every ``every_n_steps`` steps and summed on the device; the epoch's
numbers reach the host in one transfer at its end, so the training step never waits. At the end of the run,
PNG summaries (gradient flow, activations, weights, overfitting gap) are logged under ``plots/``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from dlsuite.config import DiagnosticsConfig
from dlsuite.techniques.hooks import HasObjective, RecordsEpochs, RunLogger, WrapsModel

_ACTS = (nn.ReLU, nn.Sigmoid, nn.Tanh)


def saturated(module: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """Which outputs of a sigmoid (below 0.01 or above 0.99) or tanh (beyond +-0.99) are saturated."""
    return ((out < 0.01) | (out > 0.99)) if isinstance(module, nn.Sigmoid) else (out.abs() > 0.99)


def activation_statistic(module: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """One forward's health number of an activation layer's output ``(B, C, ...)``: for a ReLU the share
    of units (channels or features) silent for the whole batch, else the share of saturated outputs."""
    if isinstance(module, nn.ReLU):
        units = out.transpose(0, 1).reshape(out.shape[1], -1) if out.dim() > 1 else out[None]
        return 1.0 - (units > 0).any(dim=1).float().mean()
    return saturated(module, out).float().mean()


class Diagnostics(Callback):
    """Per-epoch gradient, activation and weight statistics with end-of-run plots.

    Args:
        cfg: the ``tracking.diagnostics`` section.
        plots: log the PNG summaries at the end of the run.
    """

    def __init__(self, cfg: DiagnosticsConfig, plots: bool = True) -> None:
        self.cfg = cfg
        self.plots = plots
        self.history: list[dict[str, float]] = []
        self._weights: list[tuple[str, torch.Tensor]] = []
        self._acts: list[tuple[str, str]] = []
        self._modules: list[tuple[str, nn.Module]] = []
        self._hooks: list[Any] = []
        self._active = False
        self._grad_sum: torch.Tensor | None = None
        self._grad_n = 0
        self._act_sum: dict[str, torch.Tensor] = {}
        self._act_n: dict[str, int] = {}

    # -- set-up ----------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Find the weight tensors and the activation modules to sample."""
        if stage != "fit" or self._modules:
            return
        model = pl_module.model if isinstance(pl_module, WrapsModel) else pl_module
        self._weights = [(n.removesuffix(".weight"), p) for n, p in model.named_parameters() if p.dim() >= 2]
        for name, module in model.named_modules():
            if isinstance(module, _ACTS):
                kind = "dead_relu" if isinstance(module, nn.ReLU) else "saturation"
                self._acts.append((name, kind))
                self._modules.append((name, module))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Remove any activation hooks still attached."""
        self._detach()

    def _attach(self) -> None:
        # Hooks live only for the sampled steps: a module with a forward hook takes nn.Module's slow
        # call path, which on a small model cost about 10% of every step when the hooks stayed on.
        self._hooks = [module.register_forward_hook(self._hook(name, module)) for name, module in self._modules]

    def _detach(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _hook(self, name: str, module: nn.Module) -> Any:
        def hook(mod: nn.Module, inputs: Any, out: torch.Tensor) -> None:
            if not mod.training:
                return
            value = activation_statistic(module, out.detach())
            self._act_sum[name] = self._act_sum[name] + value if name in self._act_sum else value
            self._act_n[name] = self._act_n.get(name, 0) + 1

        return hook

    # -- sampling during the epoch ---------------------------------------------------------------
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Sample this step or not (every N steps and the epoch's first)."""
        self._active = batch_idx % self.cfg.every_n_steps == 0
        if self._active and not self._hooks:
            self._attach()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Stop sampling activations (validation forwards are not training statistics)."""
        self._active = False
        if self._hooks:
            self._detach()

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Per-layer gradient norms, before clipping, summed on the device."""
        if not self._active or not self._weights:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in self._weights]
        norms = torch.stack(torch._foreach_norm(grads)).float()
        self._grad_sum = norms if self._grad_sum is None else self._grad_sum + norms
        self._grad_n += 1

    # -- the epoch's record ----------------------------------------------------------------------
    @torch.no_grad()
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Assemble and log the epoch's diagnostics in one device-to-host transfer."""
        if not self._weights:
            return
        ws = [p.detach().float() for _, p in self._weights]
        parts = [
            torch.stack(torch._foreach_norm(ws)),
            torch.stack([(w.abs() < self.cfg.sparsity_threshold).float().mean() for w in ws]),
            torch.stack([w.abs().sum() for w in ws]),
            torch.stack([torch.tensor(float(w.numel()), device=w.device) for w in ws]),
        ]
        grads = self._grad_sum / max(self._grad_n, 1) if self._grad_sum is not None else None
        if grads is not None:
            parts.append(grads)
        act_names = [n for n, _ in self._acts if n in self._act_sum]
        if act_names:
            parts.append(torch.stack([self._act_sum[n] / self._act_n[n] for n in act_names]))
        penalty = _penalty(pl_module)
        if penalty is not None:
            parts.append(penalty.float().reshape(1))
        flat = torch.cat([p.to(parts[0].device) for p in parts]).tolist()  # the one host sync
        k = len(ws)
        names = [n for n, _ in self._weights]
        norms, sparsity, l1, sizes = flat[:k], flat[k : 2 * k], flat[2 * k : 3 * k], flat[3 * k : 4 * k]
        pos = 4 * k
        row: dict[str, float] = {}
        for i, n in enumerate(names):
            row[f"weight_norm/{n}"] = norms[i]
            row[f"sparsity/{n}"] = sparsity[i]
        row["weight_l1"] = float(sum(l1))
        row["weight_sparsity"] = float(sum(s * m for s, m in zip(sparsity, sizes)) / max(sum(sizes), 1))
        if grads is not None:
            g = flat[pos : pos + k]
            pos += k
            for i, n in enumerate(names):
                row[f"grad_norm/{n}"] = g[i]
            row["grad_norm_ratio"] = g[0] / g[-1] if g[-1] > 0 else float("nan")
        if act_names:
            kinds = dict(self._acts)
            a = flat[pos : pos + len(act_names)]
            pos += len(act_names)
            for n, v in zip(act_names, a):
                row[f"{kinds[n]}/{n}"] = v
            for kind in ("dead_relu", "saturation"):
                vals = [v for n, v in zip(act_names, a) if kinds[n] == kind]
                if vals:
                    row[f"{kind}_mean"] = float(np.mean(vals))
        if penalty is not None:
            row["penalty"] = flat[pos]
        self._grad_sum, self._grad_n = None, 0
        self._act_sum, self._act_n = {}, {}
        self.history.append({"epoch": float(trainer.current_epoch), **row})
        # Straight to the run's logger: LightningModule.log costs about 1 ms a key on the 2-core CPU
        # (it builds a torchmetrics state per key), and no callback monitors these numbers.
        if trainer.logger is not None:
            trainer.logger.log_metrics({**row, "epoch": trainer.current_epoch}, step=trainer.global_step)

    # -- summaries -------------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Draw the summary PNGs and log them with the run (when it is tracked)."""
        logger = trainer.logger
        if not (self.plots and self.history and isinstance(logger, RunLogger) and trainer.is_global_zero):
            return
        epochs = pl_module.history if isinstance(pl_module, RecordsEpochs) else []
        with tempfile.TemporaryDirectory(prefix="dlsuite-diag-") as tmp:
            for path in write_plots(self.history, list(epochs), Path(tmp)):
                logger.client.log_artifact(logger.run_id, str(path), "plots")


def _penalty(task: object) -> torch.Tensor | None:
    """The regularisation penalty of the task's last training step, if its objective adds one."""
    return task.objective.last_penalty if isinstance(task, HasObjective) else None


def _series(history: list[dict[str, float]], prefix: str) -> dict[str, list[float]]:
    keys = [k for k in history[-1] if k.startswith(prefix)]
    return {k[len(prefix) :]: [r.get(k, np.nan) for r in history] for k in keys}


def write_plots(diag: list[dict[str, float]], epochs: list[dict[str, float]], folder: Path) -> list[Path]:
    """``gradient_flow.png``, ``activations.png``, ``weights.png`` and ``overfitting.png`` in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[Path] = []
    x = [int(r["epoch"]) for r in diag]
    grads = _series(diag, "grad_norm/")
    if grads:
        fig, (ax, bar) = plt.subplots(1, 2, figsize=(12, 4.5))
        cmap = plt.get_cmap("viridis")
        for i, (name, ys) in enumerate(grads.items()):
            ax.plot(x, np.maximum(ys, 1e-30), color=cmap(i / max(len(grads) - 1, 1)), label=name)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("gradient L2 norm")
        ax.set_title("per-layer gradient norm (dark = input side)")
        if len(grads) <= 12:
            ax.legend(fontsize=7)
        first, last = [ys[0] for ys in grads.values()], [ys[-1] for ys in grads.values()]
        pos = np.arange(len(grads))
        bar.bar(pos - 0.2, np.maximum(first, 1e-30), 0.4, label=f"epoch {x[0]}")
        bar.bar(pos + 0.2, np.maximum(last, 1e-30), 0.4, label=f"epoch {x[-1]}")
        bar.set_yscale("log")
        bar.set_xticks(pos, list(grads), rotation=90, fontsize=7)
        bar.set_title("gradient norm by depth (input -> output)")
        bar.legend()
        fig.tight_layout()
        out.append(folder / "gradient_flow.png")
        fig.savefig(out[-1], dpi=100)
        plt.close(fig)
    acts = {**_series(diag, "dead_relu/"), **_series(diag, "saturation/")}
    if acts:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, ys in _series(diag, "dead_relu/").items():
            ax.plot(x, ys, label=f"dead ReLU {name}")
        for name, ys in _series(diag, "saturation/").items():
            ax.plot(x, ys, "--", label=f"saturated {name}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("epoch")
        ax.set_ylabel("fraction of units")
        ax.set_title("dead ReLUs and saturated sigmoid / tanh units")
        if len(acts) <= 12:
            ax.legend(fontsize=7)
        fig.tight_layout()
        out.append(folder / "activations.png")
        fig.savefig(out[-1], dpi=100)
        plt.close(fig)
    fig, (ax, sp) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, ys in _series(diag, "weight_norm/").items():
        ax.plot(x, ys, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("weight L2 norm")
    ax.set_title("weight norms")
    if len(_series(diag, "weight_norm/")) <= 12:
        ax.legend(fontsize=7)
    sp.plot(x, [r["weight_sparsity"] for r in diag], label="all weights")
    sp.set_xlabel("epoch")
    sp.set_ylabel("fraction |w| below threshold")
    sp.set_title("weight sparsity (L1 drives it up)")
    fig.tight_layout()
    out.append(folder / "weights.png")
    fig.savefig(out[-1], dpi=100)
    plt.close(fig)
    if epochs and any("gap_acc" in r for r in epochs):
        ex = [int(r["epoch"]) for r in epochs]
        fig, (ga, lo) = plt.subplots(1, 2, figsize=(12, 4.5))
        ga.plot(ex, [r.get("gap_acc", np.nan) for r in epochs], label="train acc - val acc")
        ga.axhline(0, color="grey", lw=0.8)
        ga.set_xlabel("epoch")
        ga.set_title("generalisation gap (accuracy)")
        lo.plot(ex, [r.get("train_loss", np.nan) for r in epochs], label="train loss")
        lo.plot(ex, [r.get("val_loss", np.nan) for r in epochs], label="val loss")
        vals = [r.get("val_loss", np.nan) for r in epochs]
        if not np.all(np.isnan(vals)):
            best = ex[int(np.nanargmin(vals))]
            lo.axvline(best, color="grey", ls=":", label=f"lowest val loss (epoch {best})")
        accs = [r.get("val_acc", np.nan) for r in epochs]
        if not np.all(np.isnan(accs)):
            ga.axvline(ex[int(np.nanargmax(accs))], color="grey", ls=":", label="best val acc")
        lo.set_xlabel("epoch")
        lo.set_title("validation loss turning up = overfitting")
        ga.legend()
        lo.legend()
        fig.tight_layout()
        out.append(folder / "overfitting.png")
        fig.savefig(out[-1], dpi=100)
        plt.close(fig)
    return out
