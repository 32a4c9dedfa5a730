"""Loss functions by name (``task.loss``, options in ``task.loss_args``).

Each factory takes the run config and its options and returns a module ``(outputs, targets) -> scalar`` whose
value is averaged over the minibatch. Models emit raw scores (logits); a loss that needs probabilities applies
the softmax / sigmoid itself. With class labels as targets, the distribution losses (``bce``, ``bce_logits``,
``mse``, ``mae``, ``huber``, ``kl_div``) compare against the one-hot target, smoothed by
``regularization.label_smoothing``; given float targets of the outputs' shape (regression, reconstruction) they
compare directly.

Each loss declares the kinds of target it fits (``labels``: integer classes; ``values``: float tensors); a task
declares the kind it produces (``dlsuite.tasks.TASK_SPECS``), and :func:`check_loss` refuses a pairing that
does not fit, before anything runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dlsuite.config import RunConfig
from dlsuite.errors import ConfigError, refuse_unknown
from dlsuite.registry import Registry

LossFactory = Callable[..., nn.Module]
LOSSES: Registry[LossFactory] = Registry("losses", "loss functions")

_FITS: dict[str, frozenset[str]] = {}
_SMOOTHS: set[str] = set()


def _loss(
    name: str, targets: tuple[str, ...] = ("labels",), smoothing: bool = True
) -> Callable[[LossFactory], LossFactory]:
    def deco(fn: LossFactory) -> LossFactory:
        LOSSES.add(name, fn)
        _FITS[name] = frozenset(targets)
        if smoothing:
            _SMOOTHS.add(name)
        return fn

    return deco


def soft_targets(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """One-hot rows of ``y``, with ``smoothing`` of the mass spread evenly over all classes."""
    one_hot = F.one_hot(y, num_classes).float()
    return one_hot * (1 - smoothing) + smoothing / num_classes if smoothing else one_hot


class _DistributionLoss(nn.Module):
    """Compares ``squash(outputs)`` with one-hot (smoothed) targets for labels, or directly for values."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], squash: str, smoothing: float) -> None:
        super().__init__()
        self.fn = fn
        self.squash = squash
        self.smoothing = smoothing

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.dtype in (torch.int64, torch.int32) and y.dim() == out.dim() - 1:
            y = soft_targets(y, out.shape[-1], self.smoothing)
            if self.squash == "softmax":
                out = out.softmax(-1)
            elif self.squash == "sigmoid":
                out = out.sigmoid()
        elif self.squash == "sigmoid":
            out = out.sigmoid()
        return self.fn(out, y.to(out.dtype))


@_loss("cross_entropy")
def _cross_entropy(cfg: RunConfig) -> nn.Module:
    """Softmax cross-entropy with label smoothing."""
    return nn.CrossEntropyLoss(label_smoothing=cfg.regularization.label_smoothing)


class _NLLOnLogits(nn.Module):
    """Negative log-likelihood of log-softmax outputs (the model emits logits)."""

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(F.log_softmax(logits, dim=-1), y)


@_loss("nll", smoothing=False)
def _nll(cfg: RunConfig) -> nn.Module:
    """Negative log-likelihood of the log-softmax (equal to cross-entropy without smoothing)."""
    return _NLLOnLogits()


@_loss("bce", targets=("labels", "values"))
def _bce(cfg: RunConfig) -> nn.Module:
    """Binary cross-entropy of sigmoid outputs per class (one-vs-rest; multi-label with float targets)."""
    return _DistributionLoss(F.binary_cross_entropy, "sigmoid", cfg.regularization.label_smoothing)


class _BCEWithLogits(_DistributionLoss):
    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y.dtype in (torch.int64, torch.int32) and y.dim() == out.dim() - 1:
            y = soft_targets(y, out.shape[-1], self.smoothing)
        return F.binary_cross_entropy_with_logits(out, y.to(out.dtype))


@_loss("bce_logits", targets=("labels", "values"))
def _bce_logits(cfg: RunConfig) -> nn.Module:
    """Binary cross-entropy on logits (the numerically stable form of ``bce``)."""
    return _BCEWithLogits(F.binary_cross_entropy_with_logits, "none", cfg.regularization.label_smoothing)


@_loss("mse", targets=("labels", "values"))
def _mse(cfg: RunConfig) -> nn.Module:
    """Mean squared error (L2); on softmax probabilities vs one-hot for labels (the Brier score)."""
    return _DistributionLoss(F.mse_loss, "softmax", cfg.regularization.label_smoothing)


@_loss("mae", targets=("labels", "values"))
def _mae(cfg: RunConfig) -> nn.Module:
    """Mean absolute error (L1); on softmax probabilities vs one-hot for labels."""
    return _DistributionLoss(F.l1_loss, "softmax", cfg.regularization.label_smoothing)


@_loss("huber", targets=("labels", "values"))
def _huber(cfg: RunConfig, delta: float = 1.0) -> nn.Module:
    """Huber / smooth L1: quadratic below ``delta``, linear above."""
    return _DistributionLoss(
        lambda a, b: F.huber_loss(a, b, delta=delta), "softmax", cfg.regularization.label_smoothing
    )


class _Hinge(nn.Module):
    def __init__(self, margin: float, p: int) -> None:
        super().__init__()
        self.margin, self.p = margin, p

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.multi_margin_loss(logits, y, p=self.p, margin=self.margin)


@_loss("hinge", smoothing=False)
def _hinge(cfg: RunConfig, margin: float = 1.0, p: int = 1) -> nn.Module:
    """Multi-class hinge (SVM-style multi-margin): the true class must win by ``margin``."""
    if p not in (1, 2):
        raise ValueError("p must be 1 or 2")
    return _Hinge(margin, p)


class _KLDiv(nn.Module):
    def __init__(self, smoothing: float) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        target = soft_targets(y, logits.shape[-1], self.smoothing)
        return F.kl_div(F.log_softmax(logits, -1), target, reduction="batchmean")


@_loss("kl_div")
def _kl_div(cfg: RunConfig) -> nn.Module:
    """KL divergence from the (smoothed) target distribution to the softmax, averaged over the batch."""
    return _KLDiv(cfg.regularization.label_smoothing)


class _Focal(nn.Module):
    def __init__(self, gamma: float, smoothing: float) -> None:
        super().__init__()
        self.gamma, self.smoothing = gamma, smoothing

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, -1)
        target = soft_targets(y, logits.shape[-1], self.smoothing)
        # (1 - p)^gamma down-weights the examples the model already gets right.
        return -((1 - logp.exp()) ** self.gamma * logp * target).sum(-1).mean()


@_loss("focal")
def _focal(cfg: RunConfig, gamma: float = 2.0) -> nn.Module:
    """Focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_true)^gamma``; gamma 0 is cross-entropy."""
    if gamma < 0:
        raise ValueError("gamma must be >= 0")
    return _Focal(gamma, cfg.regularization.label_smoothing)


def loss_options(name: str) -> dict[str, Any]:
    """The options (``task.loss_args``) a loss takes, with their defaults."""
    params = list(inspect.signature(LOSSES.get(name, what="loss")).parameters.values())[1:]
    return {p.name: p.default for p in params}


def check_loss(name: str, args: dict[str, Any], targets: str, label_smoothing: float) -> None:
    """Refuse a loss that does not fit the task's ``targets`` kind, options it does not take, or label
    smoothing it would ignore. ``targets`` ``none``: the task computes its own loss (nothing to check)."""
    LOSSES.get(name, what="loss")
    refuse_unknown(args, loss_options(name), f"loss {name!r}", "task.loss_args.{}", option=True)
    if targets == "none":
        return
    if targets not in _FITS[name]:
        fitting = sorted(n for n, fits in _FITS.items() if targets in fits)
        raise ConfigError(
            f"loss {name!r} does not fit the task, whose targets are {targets}; losses that fit: {', '.join(fitting)}"
        )
    if label_smoothing and name not in _SMOOTHS:
        raise ConfigError(
            f"regularization.label_smoothing does not apply to loss {name!r}; "
            f"it applies to: {', '.join(sorted(_SMOOTHS))}"
        )


def create_loss(cfg: RunConfig) -> nn.Module:
    """The loss module that ``cfg.task.loss`` names, with ``cfg.task.loss_args``."""
    args = dict(getattr(cfg.task, "loss_args", {}) or {})
    try:
        return LOSSES.get(cfg.task.loss, what="loss")(cfg, **args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"loss {cfg.task.loss!r} with {args}: {exc}") from None
