"""A user's own images in torchvision's ImageFolder layout, flat or already split.

- Flat: ``root/<class name>/<image>``; validation and test are carved from it (``data.val_fraction``,
  ``data.test_fraction``, ``data.split_seed``).
- Split: ``root/train/<class>/...`` and ``root/val/<class>/...``, optionally ``root/test/<class>/...``
  (ImageNet's and torchvision's layout): those folders are the splits; a missing ``val/`` or ``test/`` is
  carved from ``train/`` as in the flat layout. Classes are numbered by ``train/``'s folders.

A root whose sub-folders mix split names (``train``, ``val``, ``test``) with other names is refused: it is
either a split layout with a stray folder or a flat layout with a class named like a split, and reading it
either way would train on the wrong labels. Up to ``max_in_memory`` images are decoded once into tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torchvision import datasets
from torchvision.transforms import v2

from dlsuite.data.base import Arrays, InMemoryDataModule
from dlsuite.errors import DataError

SPLITS = ("train", "val", "test")


def split_folders(root: Path) -> dict[str, Path] | None:
    """The split folders of a split layout (``train`` and optionally ``val``/``test``), or None for a flat
    layout. Raises DataError for a root that mixes split folders with class folders."""
    subs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    named = [s for s in subs if s in SPLITS]
    if not named:
        return None
    others = [s for s in subs if s not in SPLITS]
    if others:
        raise DataError(
            f"image_folder root {root} mixes split folders ({', '.join(named)}) with class folders "
            f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}); lay it out either as "
            "root/train/<class>/..., root/val/<class>/... [root/test/<class>/...] or as root/<class>/..., "
            "and do not name a class train, val or test"
        )
    if "train" not in named:
        raise DataError(
            f"image_folder root {root} has {', '.join(named)}/ but no train/: a split layout needs "
            "root/train/<class>/... (and val/, test/ beside it)"
        )
    return {s: root / s for s in named}


class ImageFolder(InMemoryDataModule):
    """Images in class sub-folders, resized to ``data.image_size`` (default: the first image's size)."""

    ARGS: ClassVar[dict[str, Any]] = {"grayscale": False, "max_in_memory": 50000}

    def load(self) -> Arrays:
        """Decode every image into tensors ``(N, C, S, S)`` with values 0..255, per split folder if any."""
        root = Path(self.cfg.root).expanduser() if self.cfg.root else None
        if root is None or not root.is_dir():
            raise DataError(
                f"image_folder needs data.root to be a folder of class sub-folders "
                f"(root/<class>/<image>.png|jpg, or root/train/<class>/... and root/val/<class>/...); "
                f"got {self.cfg.root!r}"
            )
        folders = split_folders(root) or {"train": root}
        sets = {s: self._open(p) for s, p in folders.items()}
        total = sum(len(ds) for ds in sets.values())
        if total > self.args["max_in_memory"]:
            raise DataError(
                f"{total} images exceed data.args.max_in_memory={self.args['max_in_memory']}; "
                "raise it (memory permitting)"
            )
        train = sets["train"]
        self.classes = list(train.classes)
        for split, ds in sets.items():
            unknown = sorted(set(ds.classes) - set(self.classes))
            if unknown:
                raise DataError(
                    f"image_folder {folders[split]} has classes that {folders['train']} lacks: "
                    f"{', '.join(unknown)}; every class of {split}/ needs training images"
                )
        first = train.loader(train.samples[0][0])
        size = self.cfg.image_size or min(first.size)
        tf = v2.Compose(
            [
                v2.Grayscale() if self.args["grayscale"] else v2.RGB(),
                v2.ToImage(),
                v2.Resize((size, size), antialias=True),
                v2.ToDtype(torch.float32, scale=False),
            ]
        )

        def decode(ds: datasets.ImageFolder) -> tuple[torch.Tensor, torch.Tensor]:
            # labels by class name in train/'s numbering: val/ may lack a class and number the rest differently
            index = {i: train.class_to_idx[c] for c, i in ds.class_to_idx.items()}
            xs = [tf(ds.loader(path)) for path, _ in ds.samples]
            return torch.stack(xs), torch.tensor([index[t] for _, t in ds.samples], dtype=torch.long)

        x, y = decode(train)
        out = Arrays(x=x, y=y, scale=255.0)
        if "val" in sets:
            out.x_val, out.y_val = decode(sets["val"])
        if "test" in sets:
            out.x_test, out.y_test = decode(sets["test"])
        return out

    def _open(self, folder: Path) -> datasets.ImageFolder:
        try:
            return datasets.ImageFolder(str(folder))
        except (FileNotFoundError, RuntimeError) as exc:
            raise DataError(f"cannot read images under {folder}: {exc}") from None
