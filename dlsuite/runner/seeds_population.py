"""The seeds of ``train --seeds`` as one population, each recorded as a plain ``dlsuite train`` run is.

A member's child run gets what :func:`dlsuite.runner.run.train` writes for that seed: the same params
(config, data and model facts, environment), tags, dataset input, ``config.yaml``, per-epoch metrics
under the same names and steps (``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``val_f1``,
``gap_*``, ``lr``), the test numbers of its best validation epoch, the summary numbers, plots and
logged model. Not recorded for members: the Lightning checkpoint file and the per-layer diagnostics
(``tracking.diagnostics``), which are not vectorised.

Writes go through ``MlflowClient.log_batch``: finished epochs at most every :data:`FLUSH_S` seconds,
the rest at the end. Every child is created RUNNING with the owner tag at the start, so a ``kill -9``
leaves them to the reaper of the next dlsuite command, as a plain run.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from dlsuite.config import RunConfig
from dlsuite.models.cost import cost_metrics
from dlsuite.population.members import member_model
from dlsuite.population.schedule import rate_table
from dlsuite.population.train import History, Scores, build_population, evaluate, fit
from dlsuite.runner.seeds import Member, _member_name, seed_config
from dlsuite.tracking import record
from dlsuite.tracking.runs import Signals, create_run

#: Validation numbers a population computes, which ``trainer.checkpoint_monitor`` may name.
MONITORS = ("val_acc", "val_loss", "val_f1")
#: Finished epochs are written to MLflow at most this often during training (a ``kill -9`` loses no more).
FLUSH_S = 10.0


@dataclass
class Prepared:
    """The members' configs and what was built for them before any run is written."""

    cfgs: list[RunConfig]
    data: Any
    """The loaded data module (shared: members differ in seed only, and splits use ``data.split_seed``)."""
    facts: dict[str, Any]
    """Data and model facts, logged as params as ``train`` logs them."""


def prepare(cfg: RunConfig, seeds: list[int]) -> Prepared:
    """Validate and build the first member (data loaded, model checked against it): nothing is written."""
    from dlsuite.build import build_run, describe

    cfgs = [seed_config(cfg, s, _member_name(cfg, s)) for s in seeds]
    parts = build_run(cfgs[0])
    return Prepared(cfgs, parts.data, describe(parts))


def _device(cfg: RunConfig) -> torch.device:
    t = cfg.trainer
    cuda = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if cuda else "cpu")


class _Children:
    """The members' child runs: created RUNNING at once, written in batches, always ended."""

    def __init__(self, prep: Prepared, parent_id: str | None, overrides: list[str]) -> None:
        from dlsuite.runner.run import run_tags
        from dlsuite.tracking import store
        from dlsuite.tracking.dataset import log_dataset
        from dlsuite.tracking.env import environment
        from dlsuite.tracking.runs import log_params, owner_id

        cfg = prep.cfgs[0]
        self.client = store.client(cfg.tracking.uri)
        exp = store.experiment_id(self.client, cfg.tracking.experiment)
        self.ids: list[str] = []
        self.ended: set[int] = set()
        self.pending: list[list[Any]] = [[] for _ in prep.cfgs]
        self.seconds = 0.0
        env = environment()
        for c in prep.cfgs:
            tags = {**run_tags(c), record.OWNER: owner_id(), record.SEED: str(c.seed)}
            if parent_id:
                tags.update({record.PARENT: parent_id, record.POPULATION: parent_id})
            if overrides:
                tags[record.OVERRIDES_TAG] = " ".join(overrides)[:5000]
            rid = create_run(self.client, exp, c.tracking.run_name, tags).info.run_id
            self.ids.append(rid)
            log_params(self.client, rid, {**c.flat(), **prep.facts, **env})
            self.client.log_text(rid, c.to_yaml(), "config.yaml")
            log_dataset(self.client, rid, prep.data, c)

    def add_epoch(self, i: int, row: dict[str, float]) -> None:
        """Queue member ``i``'s epoch record (its ``epoch`` is the step, as the epoch logger writes it)."""
        from mlflow.entities import Metric

        ts, step = int(time.time() * 1000), int(row["epoch"])
        self.pending[i] += [Metric(k, float(v), ts, step) for k, v in row.items() if k != "epoch"]

    def flush(self) -> None:
        """Write every queued epoch, one ``log_batch`` per member."""
        start = time.perf_counter()
        for i, rid in enumerate(self.ids):
            if self.pending[i]:
                self.client.log_batch(rid, metrics=self.pending[i])
                self.pending[i] = []
        self.seconds += time.perf_counter() - start

    def end(self, i: int, status: str, error: str | None = None) -> None:
        """End member ``i``'s run (once)."""
        if i in self.ended:
            return
        if error is not None:
            self.client.set_tag(self.ids[i], record.ERROR, error[:5000])
        self.client.set_terminated(self.ids[i], status=status, end_time=int(time.time() * 1000))
        self.ended.add(i)

    def end_all(self, status: str, error: str) -> None:
        """End every member still RUNNING (the population failed or was interrupted)."""
        for i in range(len(self.ids)):
            self.end(i, status, error)


def _row(hist: History, lrs: torch.Tensor, e: int, i: int) -> dict[str, float]:
    """Member ``i``'s record of epoch ``e``, with the keys and order of the sequential task's ``history``."""
    row = {"epoch": float(e), "train_loss": hist.train_loss[e][i], "train_acc": hist.train_acc[e][i]}
    if hist.val_loss:
        row.update(val_loss=hist.val_loss[e][i], val_acc=hist.val_acc[e][i], val_f1=hist.val_f1[e][i])
        row["gap_acc"] = row["train_acc"] - row["val_acc"]
        row["gap_loss"] = row["val_loss"] - row["train_loss"]
    row["lr"] = float(lrs[e, i])
    return row


def train_members(prep: Prepared, parent_id: str | None, overrides: list[str]) -> list[Member]:
    """Train the prepared members as one population, record each as a child run; one result per member."""
    from dlsuite.runner.run import is_rank_zero

    cfg = prep.cfgs[0]
    tracked = cfg.tracking.enabled and is_rank_zero()
    children = _Children(prep, parent_id, overrides) if tracked else None
    try:
        # Signals end the children KILLED (the parent's TrackedRun takes them again after): also one whose
        # exception Python dropped, which fit finds recorded at its next step.
        with Signals() as signals:
            return _train(prep, children, signals.check)
    except BaseException as exc:
        if children is not None:
            interrupted = isinstance(exc, KeyboardInterrupt)
            why = f"interrupted ({exc or 'KeyboardInterrupt'})" if interrupted else f"{type(exc).__name__}: {exc}"
            children.end_all("KILLED" if interrupted else "FAILED", f"population: {why}")
        raise


def _train(prep: Prepared, children: _Children | None, check: Callable[[], None]) -> list[Member]:
    from dlsuite.runner.run import summarize_run
    from dlsuite.techniques.speed import EpochTimer, configure_backends

    cfgs, dm = prep.cfgs, prep.data
    cfg = cfgs[0]
    configure_backends(cfg.trainer)  # threads and matmul precision, as a sequential run sets them
    device = _device(cfg)
    pop = build_population(cfgs, dm.input_shape, dm.num_classes, device)
    x, y = (t.to(device) for t in dm.splits["train"])
    xv, yv = (t.to(device) for t in dm.splits["val"])
    has_val = len(yv) > 0
    steps = -(-len(x) // cfg.data.batch_size)
    epochs = cfg.trainer.max_epochs
    lrs = rate_table([c.optim for c in cfgs], epochs, steps)[0][::steps]  # (epochs, P): each epoch's first rate
    diverged: dict[int, int] = {}
    timer, last_flush = EpochTimer(), time.perf_counter()
    show = cfg.trainer.progress_bar and sys.stderr.isatty()  # the sequential run's bar shows epochs too
    timer.marks.append(time.perf_counter())
    timer.steps.append(0)

    def on_epoch(epoch: int, hist: History) -> list[int] | None:
        nonlocal last_flush
        for i in range(len(cfgs)):
            if i in diverged:
                continue
            if not math.isfinite(hist.train_loss[epoch][i]):
                diverged[i] = epoch  # its run fails, as a sequential run stops on a NaN loss; the others go on
            if children is not None:
                children.add_epoch(i, _row(hist, lrs, epoch, i))
        if children is not None and time.perf_counter() - last_flush >= FLUSH_S:
            children.flush()
            last_flush = time.perf_counter()
        timer.marks.append(time.perf_counter())
        timer.steps.append((epoch + 1) * steps)
        if show:
            end = "\n" if epoch + 1 == epochs else ""
            print(f"\rpopulation of {len(cfgs)}: epoch {epoch + 1}/{epochs}", end=end, file=sys.stderr, flush=True)
        return [] if len(diverged) == len(cfgs) else None

    log_s = 0.0
    start = time.perf_counter()
    hist = fit(pop, (x, y), (xv, yv) if has_val else None, on_epoch=on_epoch, check=check)  # keeps pop.best
    fit_s = time.perf_counter() - start
    if children is not None:
        log_s = children.seconds
        children.flush()
    if cfg.trainer.test_checkpoint == "best":
        pop.load_best()  # as a sequential run tests its best checkpoint (no validation: the last weights)
    xt, yt = (t.to(device) for t in dm.splits["test"])
    test = evaluate(pop.stacked, xt, yt, cfg.data.eval_batch_size, pop.smoothing, bf16=pop.bf16)
    shared = {"num_params": float(prep.facts["model.num_params"]), "fit_time_s": fit_s, **cost_metrics(prep.facts)}
    shared.update(timer.summary())
    if timer.epoch_seconds:
        shared["mlflow_log_fraction"] = log_s / sum(timer.epoch_seconds)
    out: list[Member] = []
    for i, c in enumerate(cfgs):
        rows = [_row(hist, lrs, e, i) for e in range(len(hist.train_loss))]
        if i in diverged:
            loss = rows[diverged[i]]["train_loss"]
            why = f"training diverged: the loss became {loss} in epoch {diverged[i]}; lower optim.lr or set grad_clip"
            if children is not None:
                children.end(i, "FAILED", why)
            out.append(({}, rows[: diverged[i] + 1], why))
            continue
        summary = {**summarize_run(rows, test.member(i, "test")), **shared}
        if children is not None:
            _log_end(children, i, c, prep, pop, test, rows, summary)
        out.append((summary, rows, None))
    return out


def _log_end(
    children: _Children,
    i: int,
    cfg: RunConfig,
    prep: Prepared,
    pop: Any,
    test: Scores,
    rows: list[dict[str, float]],
    summary: dict[str, float],
) -> None:
    """Member ``i``'s final numbers (linked to its logged model), plots and model, as ``train`` ends a run."""
    from dlsuite.runner.run import run_tags
    from dlsuite.tracking import plots
    from dlsuite.tracking.model import finish_model, linked_metrics, start_model

    client, rid, dm = children.client, children.ids[i], prep.data
    model_id = None
    if cfg.tracking.log_model:
        model_id = start_model(client, rid, run_tags(cfg), f"{cfg.model.name}-{cfg.data.name}")
    client.log_batch(rid, metrics=linked_metrics(summary, model_id))
    if cfg.tracking.plots:
        plots.log_run_plots(client, rid, rows, test.confusion[i].cpu().numpy(), dm.classes)
    if model_id is not None:
        finish_model(client, rid, model_id, _member_module(cfg, prep, pop, i))
    children.end(i, "FINISHED")


def _member_module(cfg: RunConfig, prep: Prepared, pop: Any, i: int) -> torch.nn.Module:
    """Member ``i``'s tested weights in a plain model of its family (what a sequential run logs)."""
    m = cfg.model
    model = member_model(
        m.name, dict(m.knobs), prep.data.input_shape, prep.data.num_classes, m.init, m.init_std, cfg.seed
    )
    state = pop.stacked.member_state(i)
    # the stack's own buffers (each member's dropout rate) are not the model's
    model.load_state_dict({k: state[k].cpu() for k in model.state_dict()})
    return model.eval()
