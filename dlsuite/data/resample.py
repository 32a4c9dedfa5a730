"""Resampling of the training data for model selection and bagging: k-fold splits and bootstrap samples.

Applied to the raw splits before normalisation, so the normalisation statistics come from the data a
member actually trains on. Seeds derive from ``data.split_seed`` (folds) and ``data.bootstrap_seed``, so every
child run of a cross-validation or a bagging ensemble is reproducible from its own config.
"""

from __future__ import annotations

import torch

from dlsuite.config import DataConfig
from dlsuite.errors import ConfigError

Split = tuple[torch.Tensor, torch.Tensor]


def fold_indices(n: int, folds: int, fold: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices of ``fold`` when ``range(n)`` is shuffled with ``seed`` and cut in ``folds``."""
    if not 0 <= fold < folds:
        raise ConfigError(f"data.fold={fold} must be in 0..{folds - 1} for data.folds={folds}")
    if n < folds:
        raise ConfigError(f"data.folds={folds} needs at least {folds} training examples, got {n}")
    parts = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tensor_split(folds)
    train = torch.cat([p for i, p in enumerate(parts) if i != fold])
    return train, parts[fold]


def bootstrap_indices(n: int, seed: int) -> torch.Tensor:
    """``n`` indices drawn from ``range(n)`` with replacement (about 63% distinct)."""
    return torch.randint(0, n, (n,), generator=torch.Generator().manual_seed(seed))


def resample(splits: dict[str, Split], cfg: DataConfig) -> dict[str, Split]:
    """Apply ``cfg.folds`` / ``cfg.fold`` and ``cfg.bootstrap_seed`` to the raw train / val / test splits."""
    out = dict(splits)
    if cfg.folds is not None:
        # Pool training and validation data; the fold decides which part validates. Test stays apart.
        x = torch.cat([out["train"][0], out["val"][0]])
        y = torch.cat([out["train"][1], out["val"][1]])
        train, val = fold_indices(len(x), cfg.folds, cfg.fold or 0, cfg.split_seed + 3)
        out["train"], out["val"] = (x[train], y[train]), (x[val], y[val])
    if cfg.bootstrap_seed is not None:
        x, y = out["train"]
        idx = bootstrap_indices(len(x), cfg.bootstrap_seed)
        out["train"] = (x[idx], y[idx])
    return out
