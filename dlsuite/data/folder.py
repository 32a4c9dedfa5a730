"""A user's own images: ``root/<class name>/<image>`` (torchvision's ImageFolder layout).

Up to ``max_in_memory`` images are decoded once into a tensor and take the fast in-memory path; larger
folders are streamed from disk by a DataLoader with workers (``data.in_memory: never`` forces that).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torchvision import datasets
from torchvision.transforms import v2

from dlsuite.data.base import Arrays, InMemoryDataModule
from dlsuite.errors import DataError


class ImageFolder(InMemoryDataModule):
    """Images in class sub-folders, resized to ``data.image_size`` (default: the first image's size)."""

    ARGS: ClassVar[dict[str, Any]] = {"grayscale": False, "max_in_memory": 50000}

    def load(self) -> Arrays:
        """Decode every image into one tensor ``(N, C, S, S)`` with values 0..255."""
        root = Path(self.cfg.root).expanduser() if self.cfg.root else None
        if root is None or not root.is_dir():
            raise DataError(
                f"image_folder needs data.root to be a folder of class sub-folders "
                f"(root/<class>/<image>.png|jpg); got {self.cfg.root!r}"
            )
        try:
            ds = datasets.ImageFolder(str(root))
        except (FileNotFoundError, RuntimeError) as exc:
            raise DataError(f"cannot read images under {root}: {exc}") from None
        if len(ds) > self.args["max_in_memory"]:
            raise DataError(
                f"{len(ds)} images exceed data.args.max_in_memory={self.args['max_in_memory']}; "
                "raise it (memory permitting)"
            )
        self.classes = list(ds.classes)
        first = ds.loader(ds.samples[0][0])
        size = self.cfg.image_size or min(first.size)
        tf = v2.Compose(
            [
                v2.Grayscale() if self.args["grayscale"] else v2.RGB(),
                v2.ToImage(),
                v2.Resize((size, size), antialias=True),
                v2.ToDtype(torch.float32, scale=False),
            ]
        )
        xs = [tf(ds.loader(path)) for path, _ in ds.samples]
        y = torch.tensor([t for _, t in ds.samples], dtype=torch.long)
        return Arrays(x=torch.stack(xs), y=y, scale=255.0)
