"""Random inputs of any shape with random labels: for speed benchmarks and tests, no files needed.

Nothing can be learned from it beyond memorising the training set; it exists so that a recipe's
step can be timed at the shape of a real dataset (e.g. CIFAR's ``(3, 32, 32)``) on a machine
that has no copy of it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from dlsuite.data.base import Arrays, InMemoryDataModule
from dlsuite.errors import ConfigError


class Synthetic(InMemoryDataModule):
    """Standard-normal inputs of ``data.args.shape`` with uniform labels, from ``data.args.seed``."""

    ARGS: ClassVar[dict[str, Any]] = {
        "shape": [3, 32, 32],
        "num_classes": 10,
        "num_train": 5120,
        "num_test": 1024,
        "seed": 0,
    }

    def load(self) -> Arrays:
        """Draw the examples (CPU, fixed seed: every run sees the same data)."""
        a = self.args
        shape = tuple(int(s) for s in a["shape"])
        if not shape or min(shape) < 1 or int(a["num_classes"]) < 2 or int(a["num_train"]) < 1:
            raise ConfigError(
                "synthetic data needs data.args.shape of positive sizes, num_classes >= 2, num_train >= 1"
            )
        g = torch.Generator().manual_seed(int(a["seed"]))
        k, n, m = int(a["num_classes"]), int(a["num_train"]), int(a["num_test"])
        self.classes = [str(c) for c in range(k)]
        return Arrays(
            x=torch.randn((n, *shape), generator=g),
            y=torch.randint(0, k, (n,), generator=g),
            x_test=torch.randn((max(m, 1), *shape), generator=g),
            y_test=torch.randint(0, k, (max(m, 1),), generator=g),
        )
