"""Data modules, one per dataset family, registered by name (``dlsuite list datasets``).

Entries are lazy: naming or validating a dataset imports no data module (they need Lightning, and
the image ones torchvision); :func:`create_datamodule` imports the one it builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlsuite.config import DataConfig
from dlsuite.data.args import DATASET_ARGS
from dlsuite.registry import Registry

if TYPE_CHECKING:
    from dlsuite.data.base import InMemoryDataModule

DATASETS: Registry[type[InMemoryDataModule]] = Registry("datasets", "datasets (LightningDataModules)")
for _name, _target in {
    "mnist1d": "dlsuite.data.mnist1d:MNIST1D",
    "digits": "dlsuite.data.digits:Digits",
    "mnist": "dlsuite.data.vision:MNIST",
    "fashion_mnist": "dlsuite.data.vision:FashionMNIST",
    "cifar10": "dlsuite.data.vision:CIFAR10",
    "cifar100": "dlsuite.data.vision:CIFAR100",
    "image_folder": "dlsuite.data.folder:ImageFolder",
    "digit_sequences": "dlsuite.data.sequences:DigitSequences",
    "synthetic": "dlsuite.data.synthetic:Synthetic",
}.items():
    DATASETS.add_lazy(_name, _target)
assert set(DATASETS) == set(DATASET_ARGS), "every dataset declares its data.args in dlsuite/data/args.py"


def create_datamodule(cfg: DataConfig, seed: int = 0) -> InMemoryDataModule:
    """Build the data module that ``cfg.name`` names."""
    return DATASETS.get(cfg.name, what="dataset")(cfg, seed)


__all__ = ["DATASETS", "create_datamodule"]
