"""MNIST-1D, built locally by the ``mnist1d`` package (identical to the paper's data, no download).

The paper's split: 4000 training and 1000 test sequences of length 40, 10 classes. Every argument of
``mnist1d.data.get_dataset_args`` can be passed through ``data.args`` (``num_samples``, ``iid_noise_scale``,
``shuffle_seq``, ...). ``val_samples > 0`` generates a validation set of its own from the same
generator with another seed, so the paper's full 4000 training sequences stay for training (the CNN
loses ~3 points of test accuracy when 10% of them are held out). Built datasets are cached under the
data root, keyed by their arguments: building takes seconds and studies build the same data often.

``shuffle_seq: true`` permutes the 40 positions of every sequence. ``make_dataset`` draws that permutation
from the global RNG after generating the samples, so a second call (the generated validation set) would
draw another one: validation would measure a different task. The validation set is therefore built
unshuffled and given the train/test permutation, which is read off the package's own shuffled and
unshuffled builds (train and test stay exactly the package's data).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, ClassVar

import numpy as np
import torch

from dlsuite.data.base import Arrays, InMemoryDataModule


def _default_args() -> dict[str, Any]:
    from mnist1d.data import get_dataset_args

    args = dict(get_dataset_args(as_dict=True))
    args.pop("url", None)  # we never download
    return args


def seq_permutation(plain: np.ndarray, shuffled: np.ndarray) -> np.ndarray:
    """The permutation ``p`` of positions with ``shuffled ≈ plain[..., p]`` (same samples, ``(N, L)``).

    Matched by nearest column, not equality: the package normalises after shuffling, so the two builds
    differ in the last bits. Raises ValueError when the columns do not match one to one.
    """
    a, b = plain.reshape(-1, plain.shape[-1]), shuffled.reshape(-1, shuffled.shape[-1])
    dist = ((b[:256, :, None] - a[:256, None, :]) ** 2).sum(0)  # (L shuffled, L plain); 256 rows tell them apart
    perm = dist.argmin(1)
    if sorted(perm.tolist()) != list(range(a.shape[1])) or not np.allclose(a[:, perm], b, atol=1e-6):
        raise ValueError("the shuffled MNIST-1D build is not a permutation of the plain one")
    return perm


class MNIST1D(InMemoryDataModule):
    """MNIST-1D as ``(N, 1, 40)`` sequences."""

    ARGS: ClassVar[dict[str, Any]] = {**_default_args(), "val_samples": 0}

    def load(self) -> Arrays:
        """Build (or read from the cache) the dataset, and the generated validation set if asked."""
        args = dict(self.args)
        n_val = int(args.pop("val_samples"))
        d = self._build(args)
        out = Arrays(
            x=torch.from_numpy(d["x"]).float().unsqueeze(1),
            y=torch.from_numpy(d["y"]).long(),
            x_test=torch.from_numpy(d["x_test"]).float().unsqueeze(1),
            y_test=torch.from_numpy(d["y_test"]).long(),
        )
        if n_val > 0:
            # Same generator, another seed: new sequences from the same distribution, and the same
            # permutation of positions as train and test when those are shuffled.
            shuffle = bool(args.get("shuffle_seq"))
            v_args = {**args, "num_samples": n_val, "train_split": 1.0, "seed": int(args["seed"]) + 1000}
            v = self._build({**v_args, "shuffle_seq": False})
            x_val = v["x"]
            if shuffle:
                x_val = x_val[..., seq_permutation(self._build({**args, "shuffle_seq": False})["x"], d["x"])]
            out.x_val = torch.from_numpy(np.ascontiguousarray(x_val)).float().unsqueeze(1)
            out.y_val = torch.from_numpy(v["y"]).long()
        return out

    def _build(self, args: dict[str, Any]) -> dict[str, np.ndarray]:
        key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
        cache = self.root / "mnist1d" / f"mnist1d-{key}.npz"
        if cache.is_file():
            d = dict(np.load(cache))
        else:
            from mnist1d.data import get_dataset_args, make_dataset

            ns = get_dataset_args()
            for k, v in args.items():
                setattr(ns, k, v)
            built = make_dataset(ns)
            d = {k: built[k] for k in ("x", "y", "x_test", "y_test")}
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, **d)
            tmp.replace(cache)  # atomic: parallel workers never read a half-written file
        return d
