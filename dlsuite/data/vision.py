"""torchvision's MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100, held in memory.

Real loading code: files are read from ``data.root`` in their published formats; when missing they are
downloaded if ``data.download`` is on and the network answers, otherwise a :class:`DataError` names the
files expected and where.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torchvision import datasets

from dlsuite.data.base import Arrays, InMemoryDataModule
from dlsuite.errors import DataError


class _LocalCIFAR10(datasets.CIFAR10):
    # torchvision checks MD5 sums of local files; files that are present are read as they are
    # (a corrupt file still fails to unpickle), checksums are kept for downloads.
    def _check_integrity(self) -> bool:
        return all((Path(self.root) / self.base_folder / f).is_file() for f, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        import pickle

        with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
            data = pickle.load(f, encoding="latin1")  # noqa: S301 (the dataset's own format)
        self.classes = data[self.meta["key"]]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _LocalCIFAR100(_LocalCIFAR10, datasets.CIFAR100):
    pass


_MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


class TorchvisionDataModule(InMemoryDataModule):
    """Base for torchvision's standard datasets; subclasses name the class and expected files."""

    ARGS: ClassVar[dict[str, Any]] = {}
    DATASET: ClassVar[Any]
    FOLDER: ClassVar[str]
    FILES: ClassVar[list[str]]

    def expected_files(self) -> list[Path]:
        """Paths that must exist under the root for an offline load."""
        return [self.root / self.FOLDER / f for f in self.FILES]

    def _open(self, train: bool) -> Any:
        missing = [p for p in self.expected_files() if not p.is_file()]
        if missing and self.cfg.download:
            old = socket.getdefaulttimeout()
            socket.setdefaulttimeout(20)  # an offline machine should fail fast, not hang
            try:
                return self.DATASET(str(self.root), train=train, download=True)
            except Exception as exc:  # noqa: BLE001  (any download failure means: files missing)
                reason = f"download failed ({type(exc).__name__}: {exc})"
            finally:
                socket.setdefaulttimeout(old)
        elif missing:
            reason = "data.download is off"
        else:
            return self.DATASET(str(self.root), train=train, download=False)
        names = ", ".join(str(p) for p in missing)
        raise DataError(
            f"dataset {self.cfg.name!r} not found under {self.root}: {reason}; expected files: {names} "
            f"(set data.root to the folder that holds {self.FOLDER}/)"
        )

    def load(self) -> Arrays:
        """Read both splits; images become float tensors ``(N, C, H, W)`` with raw 0..255 values."""
        tr, te = self._open(True), self._open(False)
        self.classes = [str(c) for c in tr.classes]

        def arrays(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
            x = torch.as_tensor(np.asarray(ds.data))
            x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
            return x.float(), torch.as_tensor(np.asarray(ds.targets)).long()

        (x, y), (xt, yt) = arrays(tr), arrays(te)
        return Arrays(x=x, y=y, x_test=xt, y_test=yt, scale=255.0)


class MNIST(TorchvisionDataModule):
    """MNIST handwritten digits, 28x28 grey."""

    DATASET = datasets.MNIST
    FOLDER = "MNIST/raw"
    FILES = _MNIST_FILES


class FashionMNIST(TorchvisionDataModule):
    """Fashion-MNIST clothing images, 28x28 grey."""

    DATASET = datasets.FashionMNIST
    FOLDER = "FashionMNIST/raw"
    FILES = _MNIST_FILES


class CIFAR10(TorchvisionDataModule):
    """CIFAR-10, 32x32 colour, 10 classes."""

    DATASET = _LocalCIFAR10
    FOLDER = "cifar-10-batches-py"
    FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]


class CIFAR100(TorchvisionDataModule):
    """CIFAR-100, 32x32 colour, 100 fine classes."""

    DATASET = _LocalCIFAR100
    FOLDER = "cifar-100-python"
    FILES = ["train", "test", "meta"]
