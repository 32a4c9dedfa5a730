"""The in-memory data module every small dataset shares, and its device-resident batch iterator.

Small datasets live as tensors on the training device and are batched by indexing there: on an H100
the plain ``DataLoader(TensorDataset)`` path ran 2.5x slower than a hand-written loop on MNIST-1D,
because collating on the host and copying every batch dominates a tiny model's step.

A subclass implements :meth:`InMemoryDataModule.load`; splitting (fixed seed), the ``train_samples``
cap, normalisation (statistics from the training split only) and batching are done here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from dlsuite.config import DataConfig
from dlsuite.data.resample import resample
from dlsuite.errors import ConfigError, refuse_unknown


@dataclass
class Arrays:
    """Raw tensors a dataset loads: inputs ``(N, C, ...)`` float, integer targets ``(N,)``."""

    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    """A validation set of its own (procedural datasets); otherwise carved from training."""
    scale: float | None = None
    """Maximum raw value (255 for 8-bit images) for ``normalize: unit``/``symmetric``; None = data's max."""


def _rank_world() -> tuple[int, int]:
    """This process's rank and the world size, from the environment Lightning's launchers set."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class TensorBatches:
    """Batches of device-resident tensors, reshuffled every epoch from ``seed + epoch``.

    Under DDP each rank takes its own shard of the permutation. Training shards are cut to equal
    length (every rank must take the same number of steps); evaluation shards take every
    ``world``-th example so that each example is counted exactly once.
    """

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        train: bool = True,
    ) -> None:
        self.tensors = tensors
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.train = train
        self.epoch = 0

    def _indices(self) -> torch.Tensor | None:
        n = len(self.tensors[0])
        rank, world = _rank_world()
        idx = None
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            idx = torch.randperm(n, generator=g)
        if world > 1:
            base = idx if idx is not None else torch.arange(n)
            per = n // world
            idx = base[rank * per : (rank + 1) * per] if self.train else base[rank::world]
        return None if idx is None else idx.to(self.tensors[0].device)

    def __len__(self) -> int:
        n = len(self.tensors[0])
        _, world = _rank_world()
        if world > 1:
            n = n // world if self.train else -(-n // world)
        return -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        idx = self._indices()
        self.epoch += 1
        n = len(self.tensors[0]) if idx is None else len(idx)
        for start in range(0, n, self.batch_size):
            if idx is None:  # slices are views: no copy for evaluation
                yield tuple(t[start : start + self.batch_size] for t in self.tensors)
            else:
                b = idx[start : start + self.batch_size]
                yield tuple(t.index_select(0, b) for t in self.tensors)


def split_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into (rest, held-out ``fraction``) with a fixed seed."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = round(n * fraction)
    return perm[k:], perm[:k]


def per_class(idx: torch.Tensor, y: torch.Tensor, k: int, seed: int, name: str) -> torch.Tensor:
    """The first ``k`` indices of each class in a seeded shuffle of ``idx`` (labels ``y[idx]``)."""
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))]
    labels = y[idx]
    keep = []
    for c in labels.unique().tolist():
        of_c = idx[labels == c]
        if len(of_c) < k:
            raise ConfigError(f"data.train_per_class={k}: class {c} of {name!r} has only {len(of_c)} training examples")
        keep.append(of_c[:k])
    return torch.cat(keep).sort().values


def default_root() -> Path:
    """Where on-disk datasets live unless ``data.root`` says otherwise."""
    return Path(os.environ.get("DLSUITE_DATA", Path.home() / ".cache" / "dlsuite" / "data"))


class InMemoryDataModule(L.LightningDataModule):
    """A dataset held as tensors (on the training device when a trainer is attached).

    Subclasses set ``ARGS`` (dataset-specific arguments with defaults, passed via ``data.args``) and
    implement :meth:`load`.
    """

    ARGS: ClassVar[dict[str, Any]] = {}

    def __init__(self, cfg: DataConfig, seed: int = 0) -> None:
        super().__init__()
        check_args(cfg.name, type(self), cfg.args)
        self.cfg = cfg
        self.seed = seed
        self.args = {**self.ARGS, **cfg.args}
        self.root = Path(cfg.root).expanduser() if cfg.root else default_root()
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.classes: list[str] | None = None

    # -- to implement ------------------------------------------------------------------------
    def load(self) -> Arrays:
        """Read the whole dataset into CPU tensors (raise ``DataError`` when files are missing)."""
        raise NotImplementedError

    # -- shape facts, available after prepare() ----------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, without the batch dimension."""
        return tuple(self._train()[0].shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of target classes."""
        if self.classes is not None:
            return len(self.classes)
        return int(max(int(s[1].max()) for s in self.splits.values() if len(s[1])) + 1)

    def _train(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.splits:
            self.prepare()
        return self.splits["train"]

    def prepare(self) -> None:
        """Load, split, cap and normalise on the CPU. Idempotent; called before any run starts,
        so that a missing dataset is reported before anything is written."""
        if self.splits:
            return
        a = self.load()
        x, y = a.x.float(), a.y.long()
        if a.x_test is None or a.y_test is None:
            rest, test = split_indices(len(x), self.cfg.test_fraction, self.cfg.split_seed)
            x_test, y_test = x[test], y[test]
            x, y = x[rest], y[rest]
        else:
            x_test, y_test = a.x_test.float(), a.y_test.long()
        if a.x_val is not None and a.y_val is not None:
            x_val, y_val = a.x_val.float(), a.y_val.long()
            train, val = torch.arange(len(x)), torch.arange(0)
        else:
            x_val, y_val = None, None
            train, val = split_indices(len(x), self.cfg.val_fraction, self.cfg.split_seed + 1)
        if self.cfg.train_samples is not None:
            # cap with a seeded permutation so the subset does not depend on the file's order
            train = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(self.cfg.split_seed + 2))]
            if self.cfg.train_samples > len(train):
                raise ConfigError(
                    f"data.train_samples={self.cfg.train_samples} exceeds the {len(train)} training "
                    f"examples of {self.cfg.name!r}"
                )
            train = train[: self.cfg.train_samples]
        if self.cfg.train_per_class is not None:
            train = per_class(train, y, self.cfg.train_per_class, self.cfg.split_seed + 3, self.cfg.name)
        splits = {
            "train": (x[train], y[train]),
            "val": (x_val, y_val) if x_val is not None and y_val is not None else (x[val], y[val]),
            "test": (x_test, y_test),
        }
        splits = resample(splits, self.cfg)  # k-fold / bootstrap, before the normalisation statistics
        self.splits = {k: (self._normalize(v[0], splits["train"][0], a.scale), v[1]) for k, v in splits.items()}

    def _normalize(self, x: torch.Tensor, train_x: torch.Tensor, scale: float | None) -> torch.Tensor:
        mode = self.cfg.normalize
        if mode == "none":
            return x
        if mode == "standard":
            if self.mean is None:
                dims = [d for d in range(train_x.dim()) if d != 1]  # per channel
                self.mean = train_x.mean(dim=dims, keepdim=True)[0]
                self.std = train_x.std(dim=dims, keepdim=True)[0].clamp_min(1e-8)
            assert self.std is not None
            return (x - self.mean) / self.std
        top = scale if scale is not None else float(train_x.abs().max())
        unit = x / top
        return unit if mode == "unit" else unit * 2 - 1

    # -- Lightning hooks ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Move the splits to the training device (once)."""
        self.prepare()
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self.cfg.in_memory == "never":
            device = torch.device("cpu")
        for k, (x, y) in self.splits.items():
            if x.device != device:
                self.splits[k] = (x.to(device), y.to(device))

    def _loader(self, split: str, train: bool) -> Any:
        x, y = self.splits[split]
        bs = self.cfg.batch_size if train else self.cfg.eval_batch_size
        if self.cfg.in_memory == "never":
            return DataLoader(
                TensorDataset(x, y),
                batch_size=bs,
                shuffle=train,
                num_workers=self.cfg.num_workers,
                generator=torch.Generator().manual_seed(self.seed),
            )
        return TensorBatches((x, y), bs, shuffle=train, seed=self.seed, train=train)

    def train_dataloader(self) -> Any:
        """Shuffled training batches."""
        return self._loader("train", True)

    def val_dataloader(self) -> Any:
        """Validation batches, in order."""
        return self._loader("val", False)

    def test_dataloader(self) -> Any:
        """Test batches, in order."""
        return self._loader("test", False)

    def describe(self) -> dict[str, Any]:
        """Sizes and shapes, logged with the run."""
        return {
            "data.n_train": len(self.splits["train"][1]),
            "data.n_val": len(self.splits["val"][1]),
            "data.n_test": len(self.splits["test"][1]),
            "data.input_shape": list(self.input_shape),
            "data.num_classes": self.num_classes,
        }


def check_args(name: str, cls: type[InMemoryDataModule], args: dict[str, Any]) -> None:
    """Refuse ``data.args`` keys the dataset does not take, naming those it does."""
    refuse_unknown(args, cls.ARGS, f"dataset {name!r}", "data.args.{}")
