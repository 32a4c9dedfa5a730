"""Protocols made of several runs: k-fold cross-validation and bagging ensembles.

Both record one parent MLflow run (the config, the aggregate metrics) with one child run per fold or
member. Each child's config says exactly what it trained on (``data.fold``, ``data.bootstrap_seed``), so
any child can be reproduced on its own. :func:`dlsuite.runner.run.train` hands a config that asks for a
protocol to :func:`run_protocol`, so callers (the CLI, studies) need not know about protocols.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from dlsuite.config import RunConfig, build_config
from dlsuite.tracking import record
from dlsuite.tracking.runs import TrackedRun

# Metrics of the children that are summarised (mean and std) in the parent of a cross-validation.
CV_KEYS = ("best_val_acc", "final_val_acc", "final_val_loss", "final_gap_acc", "test_acc", "test_loss", "best_epoch")
# The members' own end-of-run numbers a parent records as their mean (prefixes).
MEMBER_FINALS = ("final_", "best_val_")
# What a bagging parent adds beside ensemble_metrics: the ensemble's test and validation numbers under
# the names single runs use (a study compares or selects on them like any run), the members' spread,
# and the members' mean best validation accuracy (its own name: it is not the ensemble's).
BAGGING_METRICS = (
    "test_acc",
    "test_loss",
    record.BEST_VAL_ACC,
    record.ENSEMBLE_VAL_ACC,
    record.ENSEMBLE_VAL_LOSS,
    "member_test_acc_std",
    record.MEMBER_BEST_VAL_ACC_MEAN,
)


def protocol_of(cfg: RunConfig) -> str | None:
    """``"kfold"``, ``"bagging"`` or None (a single run)."""
    if cfg.data.folds is not None and cfg.data.fold is None:
        return "kfold"
    ens = cfg.regularization.ensemble
    if ens is not None and ens.method == "bagging":
        return "bagging"
    return None


def member_config(cfg: RunConfig, kind: str) -> RunConfig:
    """The config of a protocol's first member (a fold, a bagged model)."""
    if kind == "kfold":
        return _child(cfg, {"data.fold": 0})
    return _child(cfg, {"regularization.ensemble": None, "data.bootstrap_seed": 0})


def protocol_metric_names(kind: str, cfg: RunConfig, member_names: set[str]) -> set[str]:
    """The summary names of a protocol's parent run, given those of one member (see ``summary_names``)."""
    names = {k for k in member_names if k.startswith(MEMBER_FINALS)}
    if kind == "kfold":
        assert cfg.data.folds is not None
        names |= {"cv_folds"}
        names |= {f"cv_{k}_{s}" for k in CV_KEYS for s in ("mean", "std")}
        names |= {f"fold{i}_{k}" for k in CV_KEYS for i in range(cfg.data.folds)}
    else:
        names |= {*record.ENSEMBLE_METRICS, *BAGGING_METRICS}
    return names


def _child(cfg: RunConfig, changes: dict[str, Any]) -> RunConfig:
    """A copy of ``cfg`` with dotted-key ``changes``, validated again."""
    from dlsuite.config import set_dotted

    data = cfg.to_dict()
    for key, value in changes.items():
        set_dotted(data, key, value)
    return build_config(data, "(protocol member)")


def _parent(cfg: RunConfig, kind: str, parent_run_id: str | None, tags: dict[str, str] | None) -> TrackedRun | None:
    from dlsuite.runner.run import is_rank_zero, run_tags

    if not (cfg.tracking.enabled and is_rank_zero()):
        return None
    name = cfg.tracking.run_name or f"{cfg.name or f'{cfg.model.name}-{cfg.data.name}'}-{kind}"
    all_tags = {**run_tags(cfg), **(tags or {}), record.PROTOCOL: kind}
    numbered = cfg.tracking.run_name is None  # repeated runs of one config are told apart by number
    return TrackedRun(cfg.tracking.uri, cfg.tracking.experiment, name, all_tags, parent_run_id, number=numbered)


def mean_history(histories: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Per-epoch means over the members, for the epochs every member trained (early stopping may end
    some sooner) and the numbers every member recorded in them."""
    n = min((len(h) for h in histories), default=0)
    out = []
    for e in range(n):
        rows = [h[e] for h in histories]
        keys = set.intersection(*(set(r) for r in rows)) - {"epoch"}
        out.append({"epoch": float(e), **{k: float(np.mean([r[k] for r in rows])) for k in sorted(keys)}})
    return out


def member_finals(results: list[Any]) -> dict[str, float]:
    """Mean over the members of their own end-of-run numbers (``final_gap_acc``, ``best_val_acc``...)."""
    keys = [k for k in results[0].metrics if k.startswith(MEMBER_FINALS)] if results else []
    return {k: float(np.mean([r.metrics[k] for r in results])) for k in keys if all(k in r.metrics for r in results)}


def _log_parent(
    tracked: TrackedRun, cfg: RunConfig, metrics: dict[str, float], history: list[dict[str, float]]
) -> None:
    from mlflow.entities import Metric

    from dlsuite.tracking.env import environment

    tracked.log_config(cfg, environment())
    ts = int(time.time() * 1000)
    finite = [Metric(k, float(v), ts, 0) for k, v in metrics.items() if math.isfinite(v)]
    # the members' mean learning curves, one step per epoch, as a single run logs its own
    for row in history:
        step = int(row["epoch"])
        finite += [Metric(k, v, ts, step) for k, v in row.items() if k != "epoch" and math.isfinite(v)]
    tracked.client.log_batch(tracked.run_id, metrics=finite)


def _run_children(
    cfg: RunConfig,
    kind: str,
    members: list[tuple[RunConfig, dict[str, str]]],
    protocol_metrics: Callable[[list[Any]], dict[str, float]],
    parent_run_id: str | None,
    tags: dict[str, str] | None,
    callbacks: list[Any] | None,
) -> Any:
    from dlsuite.runner.run import RunResult, train

    parent = _parent(cfg, kind, parent_run_id, tags)
    with parent if parent is not None else contextlib.nullcontext():
        pid = parent.run_id if parent is not None else None
        results = [
            train(child, parent_run_id=pid, tags={**(tags or {}), **child_tags}, callbacks=callbacks)
            for child, child_tags in members
        ]
        # The parent reads like one run to reports and studies: members' mean curves and final numbers
        # (the protocol's own figures, such as the ensemble's test accuracy, take precedence).
        history = mean_history([r.history for r in results])
        metrics = {**member_finals(results), **protocol_metrics(results)}
        if parent is not None:
            _log_parent(parent, cfg, metrics, history)
    status = parent.status if parent is not None else "FINISHED"
    return RunResult(pid, status, metrics, history, None)


def cross_validate(
    cfg: RunConfig, parent_run_id: str | None, tags: dict[str, str] | None, callbacks: list[Any] | None
) -> Any:
    """Train every fold of ``cfg.data.folds`` as a child run; the parent records mean and std per metric."""
    assert cfg.data.folds is not None
    k = cfg.data.folds
    members = [
        (
            _child(cfg, {"data.fold": i, "tracking.run_name": f"{cfg.name or cfg.model.name}-fold{i}"}),
            {record.FOLD: str(i)},
        )
        for i in range(k)
    ]

    def fold_metrics(results: list[Any]) -> dict[str, float]:
        out: dict[str, float] = {"cv_folds": float(k)}
        for key in CV_KEYS:
            vals = [r.metrics[key] for r in results if key in r.metrics]
            if len(vals) == len(results):
                out[f"cv_{key}_mean"] = float(np.mean(vals))
                out[f"cv_{key}_std"] = float(np.std(vals, ddof=1))
                for i, v in enumerate(vals):
                    out[f"fold{i}_{key}"] = float(v)
        return out

    return _run_children(cfg, "kfold", members, fold_metrics, parent_run_id, tags, callbacks)


def bagging(cfg: RunConfig, parent_run_id: str | None, tags: dict[str, str] | None, callbacks: list[Any] | None) -> Any:
    """Train ``members`` models on bootstrap samples (each its own seed), then test their averaged softmax."""
    from dlsuite.data import create_datamodule
    from dlsuite.techniques.ensembles import ensemble_metrics, predict_probs

    ens = cfg.regularization.ensemble
    assert ens is not None
    members = []
    for i in range(ens.members):
        changes = {
            "regularization.ensemble": None,
            "seed": cfg.seed + i,
            "data.bootstrap_seed": 1000 * cfg.seed + i,
            "tracking.run_name": f"{cfg.name or cfg.model.name}-member{i}",
        }
        members.append((_child(cfg, changes), {record.MEMBER: str(i)}))

    def ensemble_figures(results: list[Any]) -> dict[str, float]:
        probs: dict[str, list[Any]] = {"test": [], "val": []}
        labels: dict[str, Any] = {}
        for (child, _), r in zip(members, results):
            # Each member normalises with the statistics of its own bootstrap sample: evaluate it on its own
            # view of the (shared) validation and test splits.
            dm = create_datamodule(child.data, child.seed)
            dm.prepare()
            model = r.task.model.cpu()
            for split in probs:
                x, y = dm.splits[split]
                if len(y):
                    batches = [(x[j : j + 1000], y[j : j + 1000]) for j in range(0, len(y), 1000)]
                    p, labels[split] = predict_probs(model, batches)
                    probs[split].append(p)
        out = ensemble_metrics(probs["test"], labels["test"])
        accs = [r.metrics.get("test_acc", math.nan) for r in results]
        out["member_test_acc_std"] = float(np.std(accs, ddof=1))
        # The bagged model's numbers are the ensemble's: studies compare (test) and select (validation)
        # on them like on any other run. The members' mean best_val_acc keeps a name of its own.
        out["test_acc"], out["test_loss"] = out["ensemble_test_acc"], out["ensemble_test_loss"]
        member_val = [r.metrics[record.BEST_VAL_ACC] for r in results if record.BEST_VAL_ACC in r.metrics]
        if len(member_val) == len(results):
            out[record.MEMBER_BEST_VAL_ACC_MEAN] = float(np.mean(member_val))
        if probs["val"]:
            val = ensemble_metrics(probs["val"], labels["val"])
            out[record.ENSEMBLE_VAL_ACC] = out[record.BEST_VAL_ACC] = val["ensemble_test_acc"]
            out[record.ENSEMBLE_VAL_LOSS] = val["ensemble_test_loss"]
        return out

    return _run_children(cfg, "bagging", members, ensemble_figures, parent_run_id, tags, callbacks)


def run_protocol(
    cfg: RunConfig,
    *,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """Run the protocol ``cfg`` asks for (see :func:`protocol_of`)."""
    kind = protocol_of(cfg)
    fn = cross_validate if kind == "kfold" else bagging
    return fn(cfg, parent_run_id, tags, callbacks)
