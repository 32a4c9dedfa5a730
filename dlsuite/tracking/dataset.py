"""A run's data as an MLflow dataset input, so the runs table's Dataset column tells runs on
different data apart (name, digest) and the run page shows the splits and the generator's arguments."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dlsuite.config import RunConfig
from dlsuite.tracking import record

_ROWS = 2048  # rows of each split hashed: enough to tell data apart, cheap for CIFAR-sized arrays


def digest(splits: dict[str, tuple[Any, Any]]) -> str:
    """A short content hash of the splits: every shape, every label, the first rows of the inputs."""
    h = hashlib.sha256()
    for name in sorted(splits):
        x, y = splits[name]
        h.update(f"{name}:{tuple(x.shape)}:{tuple(y.shape)}".encode())
        h.update(x[:_ROWS].detach().cpu().contiguous().numpy().tobytes())
        h.update(y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:10]


def describe(dm: Any, cfg: RunConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(source, profile) of the run's data: where it comes from and what the splits hold."""
    source: dict[str, Any] = {"dataset": cfg.data.name, "split_seed": cfg.data.split_seed}
    args = getattr(dm, "args", None)
    if args:
        source["args"] = args  # MNIST-1D's generator arguments, for example
    if cfg.data.root:
        source["root"] = cfg.data.root
    sizes = {k: len(v[1]) for k, v in dm.splits.items()}
    profile: dict[str, Any] = {
        "num_rows": sizes.get("train", 0),
        "splits": sizes,
        "input_shape": list(dm.input_shape),
        "num_classes": int(dm.num_classes),
        "normalize": cfg.data.normalize,
    }
    for key in ("train_samples", "train_per_class", "fold", "folds"):
        value = getattr(cfg.data, key, None)
        if value is not None:
            profile[key] = value
    return source, profile


def log_dataset(client: Any, run_id: str, dm: Any, cfg: RunConfig) -> None:
    """Record the run's data as a dataset input (context ``training``) of run ``run_id``."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    source, profile = describe(dm, cfg)
    entity = Dataset(
        name=cfg.data.name,
        digest=digest(dm.splits),
        source_type="code" if "root" not in source else "local",
        source=json.dumps(source, sort_keys=True, default=str),
        profile=json.dumps(profile, default=str),
    )
    tags = [InputTag(key=record.DATASET_CONTEXT_KEY, value=record.DATASET_CONTEXT_TRAIN)]
    client.log_inputs(run_id, datasets=[DatasetInput(dataset=entity, tags=tags)])
