"""Digit sequences to transform (``digit_sequences``): a sequence-to-sequence dataset with no download.

Each example is ``length`` random digits (0..``vocab``-1); the target is the same digits reversed
(``op: reverse``), sorted (``sort``) or copied (``copy``). Reversing is the classic test of attention:
the first output depends on the last input, as far as possible from it in a recurrent encoder.
Train, validation and test sequences are drawn from one generator seeded by ``data.split_seed``.
Inputs stay integer tokens: ``data.normalize`` does not apply.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from dlsuite.data.base import InMemoryDataModule
from dlsuite.errors import ConfigError

_OPS = ("reverse", "sort", "copy")


class DigitSequences(InMemoryDataModule):
    """Token sequences ``(N, length)`` and their transformed targets ``(N, length)``."""

    ARGS: ClassVar[dict[str, Any]] = {
        "op": "reverse",
        "length": 8,
        "vocab": 10,
        "num_train": 5000,
        "num_val": 500,
        "num_test": 1000,
    }

    def prepare(self) -> None:
        """Generate the three splits (idempotent; before any run is created)."""
        if self.splits:
            return
        a = self.args
        if a["op"] not in _OPS:
            raise ConfigError(f"data.args.op must be one of {', '.join(_OPS)}, got {a['op']!r}")
        if a["length"] < 1 or a["vocab"] < 2 or min(a["num_train"], a["num_val"], a["num_test"]) < 0:
            raise ConfigError("digit_sequences needs length >= 1, vocab >= 2 and sample counts >= 0")
        g = torch.Generator().manual_seed(self.cfg.split_seed)
        sizes = [a["num_train"], a["num_val"], a["num_test"]]
        x = torch.randint(0, a["vocab"], (sum(sizes), a["length"]), generator=g)
        y = {"reverse": x.flip(-1), "sort": x.sort(-1).values, "copy": x.clone()}[a["op"]]
        xs, ys = x.split(sizes), y.split(sizes)
        train = (xs[0], ys[0])
        if self.cfg.train_samples is not None:
            if self.cfg.train_samples > sizes[0]:
                raise ConfigError(f"data.train_samples={self.cfg.train_samples} exceeds data.args.num_train={sizes[0]}")
            train = (xs[0][: self.cfg.train_samples], ys[0][: self.cfg.train_samples])
        self.classes = [str(i) for i in range(a["vocab"])]
        self.splits = {"train": train, "val": (xs[1], ys[1]), "test": (xs[2], ys[2])}
