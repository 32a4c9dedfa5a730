"""Tiny dataset files in the real on-disk formats (IDX for MNIST, pickled batches for CIFAR, PNG folders)."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) in the IDX format MNIST is published in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_mnist(root: Path, folder: str = "MNIST", n_train: int = 60, n_test: int = 20, seed: int = 0) -> None:
    """MNIST-format files (28x28 grey, 10 classes) under ``root/<folder>/raw``."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(labels):  # a bright square whose position depends on the class
            images[i, 2 * c : 2 * c + 8, 4:12] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


def make_cifar(root: Path, hundred: bool = False, per_batch: int = 20, seed: int = 0) -> None:
    """CIFAR-10 (5 train batches + test batch + meta) or CIFAR-100 (train/test/meta) pickles."""
    rng = np.random.default_rng(seed)
    k = 100 if hundred else 10
    label_key = "fine_labels" if hundred else "labels"

    def batch(n: int) -> dict[str, object]:
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: list(rng.integers(0, k, n))}

    if hundred:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        files = {
            "train": batch(per_batch * 2),
            "test": batch(per_batch),
            "meta": {"fine_label_names": [f"c{i}" for i in range(k)]},
        }
    else:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        files = {f"data_batch_{i}": batch(per_batch) for i in range(1, 6)}
        files["test_batch"] = batch(per_batch)
        files["batches.meta"] = {"label_names": [f"c{i}" for i in range(k)]}
    for name, obj in files.items():
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f)


def make_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "fox"), per_class: int = 12) -> Path:
    """PNG images in ``root/<class>/`` of varying sizes (the loader resizes them)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c_i, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = 12 + (i % 3) * 2
            img = rng.integers(0, 80, (side, side, 3), dtype=np.uint8)
            img[:, :, c_i] = 220
            Image.fromarray(img).save(root / c / f"{i}.png")
    return root
