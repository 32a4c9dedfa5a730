"""scikit-learn's bundled 8x8 digits (1797 images, 10 classes) as ``(N, 1, 8, 8)`` images."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from dlsuite.data.base import Arrays, InMemoryDataModule


class Digits(InMemoryDataModule):
    """Digits with a fixed-seed train/val/test split (``data.test_fraction``, ``data.val_fraction``)."""

    ARGS: ClassVar[dict[str, Any]] = {}

    def load(self) -> Arrays:
        """Read the copy bundled with scikit-learn (pixel values 0..16)."""
        from sklearn.datasets import load_digits

        d = load_digits()
        self.classes = [str(c) for c in range(10)]
        x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1)
        return Arrays(x=x, y=torch.tensor(d.target, dtype=torch.long), scale=16.0)
