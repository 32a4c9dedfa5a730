"""Data modules, one per dataset family, registered by name (``dlsuite list datasets``)."""

from __future__ import annotations

from dlsuite.config import DataConfig
from dlsuite.data.base import InMemoryDataModule, TensorBatches
from dlsuite.data.digits import Digits
from dlsuite.data.folder import ImageFolder
from dlsuite.data.mnist1d import MNIST1D
from dlsuite.data.sequences import DigitSequences
from dlsuite.data.synthetic import Synthetic
from dlsuite.data.vision import CIFAR10, CIFAR100, MNIST, FashionMNIST
from dlsuite.registry import Registry

DATASETS: Registry[type[InMemoryDataModule]] = Registry("datasets", "datasets (LightningDataModules)")
for _name, _cls in {
    "mnist1d": MNIST1D,
    "digits": Digits,
    "mnist": MNIST,
    "fashion_mnist": FashionMNIST,
    "cifar10": CIFAR10,
    "cifar100": CIFAR100,
    "image_folder": ImageFolder,
    "digit_sequences": DigitSequences,
    "synthetic": Synthetic,
}.items():
    DATASETS.add(_name, _cls)


def create_datamodule(cfg: DataConfig, seed: int = 0) -> InMemoryDataModule:
    """Build the data module that ``cfg.name`` names."""
    return DATASETS.get(cfg.name, what="dataset")(cfg, seed)


__all__ = ["DATASETS", "InMemoryDataModule", "TensorBatches", "create_datamodule"]
