"""A :class:`~dlsuite.hpo.runner.TrialRunner` that trains a group of same-structure trials at once.

:meth:`PopulationRunner.run_group` trains the configs of one group (:func:`dlsuite.population.group.plan`)
as one population and reports every member's validation metric to its own trial after each epoch, so
Optuna's pruners act per member. A pruned member is reported PRUNED with the numbers it had when it was
pruned, and a member whose validation loss is not finite fails alone; both leave the population at
once, so they cost no more compute.

Not yet: per-member MLflow runs (``run_id`` stays None), test metrics, crash recovery of a population.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import optuna
import torch

from dlsuite.config import RunConfig
from dlsuite.errors import ConfigError
from dlsuite.hpo.runner import TrialContext, TrialOutcome, TrialRunner
from dlsuite.population.group import structure_key, why_not
from dlsuite.population.train import History, build_population, fit
from dlsuite.runner.run import summarize_run

#: Validation metrics a population computes (what ``ctx.monitor`` may name).
POPULATION_METRICS = ("val_acc", "val_loss")


def _device(cfg: RunConfig) -> torch.device:
    t = cfg.trainer
    if t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def check_group(cfgs: Sequence[RunConfig], monitor: str) -> None:
    """Refuse a group that cannot train as one population, naming the first reason."""
    if monitor not in POPULATION_METRICS:
        raise ConfigError(f"a population reports {', '.join(POPULATION_METRICS)}; it cannot prune on {monitor!r}")
    for i, cfg in enumerate(cfgs):
        reason = why_not(cfg)
        if reason is not None:
            raise ConfigError(f"config {i} cannot join a population: {reason}")
    keys = {structure_key(c) for c in cfgs}
    if len(keys) > 1:
        raise ConfigError("the configs of a population must share their structure (see population.group.plan)")


def member_history(hist: History, i: int, epochs: int) -> list[dict[str, float]]:
    """Member ``i``'s first ``epochs`` epochs as the sequential runner's per-epoch records."""
    return [
        {
            "epoch": float(e),
            "train_loss": hist.train_loss[e][i],
            "val_loss": hist.val_loss[e][i],
            "val_acc": hist.val_acc[e][i],
        }
        for e in range(epochs)
    ]


class PopulationRunner:
    """Trains groups of same-structure trials as populations; a lone trial as a population of one."""

    def run(self, cfg: RunConfig, trial: optuna.Trial, ctx: TrialContext) -> TrialOutcome:
        """The :class:`~dlsuite.hpo.runner.TrialRunner` call: a group of one."""
        return self.run_group([cfg], [trial], ctx)[0]

    def run_group(
        self, cfgs: Sequence[RunConfig], trials: Sequence[optuna.Trial], ctx: TrialContext
    ) -> list[TrialOutcome]:
        """Train ``cfgs`` (trial ``trials[i]`` is member ``i``) as one population; one outcome per member."""
        from dlsuite.data import create_datamodule

        start = time.perf_counter()
        pruned_at: list[int | None] = [None] * len(cfgs)
        diverged_at: list[int | None] = [None] * len(cfgs)

        def report(epoch: int, hist: History) -> list[int]:
            for i, trial in enumerate(trials):
                if pruned_at[i] is not None or diverged_at[i] is not None:
                    continue
                if not math.isfinite(hist.val_loss[epoch][i]):
                    diverged_at[i] = epoch
                    continue
                if ctx.prune:
                    trial.report((hist.val_acc if ctx.monitor == "val_acc" else hist.val_loss)[epoch][i], step=epoch)
                    if trial.should_prune():
                        pruned_at[i] = epoch
            return [i for i in range(len(cfgs)) if pruned_at[i] is None and diverged_at[i] is None]

        # The TrialRunner contract: the trials' own errors become FAIL outcomes; KeyboardInterrupt
        # (a BaseException) propagates so that the worker stops.
        try:
            check_group(cfgs, ctx.monitor)
            device = _device(cfgs[0])
            dm = create_datamodule(cfgs[0].data, cfgs[0].seed)  # the data's seed only orders batches
            dm.prepare()
            (x, y), (xv, yv) = dm.splits["train"], dm.splits["val"]
            pop = build_population(cfgs, dm.input_shape, dm.num_classes, device)
            hist = fit(pop, (x.to(device), y.to(device)), (xv.to(device), yv.to(device)), on_epoch=report)
        except Exception as exc:  # noqa: BLE001
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            return [TrialOutcome("FAIL", reason=reason, seconds=time.perf_counter() - start) for _ in cfgs]
        seconds = time.perf_counter() - start
        outcomes = []
        for i in range(len(cfgs)):
            stop = pruned_at[i] if pruned_at[i] is not None else diverged_at[i]
            records = member_history(hist, i, len(hist.val_acc) if stop is None else stop + 1)
            metrics = summarize_run(records, {})
            if diverged_at[i] is not None:
                reason = f"diverged: validation loss is not finite at epoch {diverged_at[i]}"
                outcomes.append(TrialOutcome("FAIL", metrics, reason=reason))
            elif stop is not None:
                outcomes.append(TrialOutcome("PRUNED", metrics, reason=f"pruned at epoch {stop}"))
            else:
                outcomes.append(TrialOutcome("COMPLETE", metrics))
        for o in outcomes:
            o.seconds = seconds / len(cfgs)  # the population's time, shared by its members
        return outcomes


if TYPE_CHECKING:
    _IS_A_TRIAL_RUNNER: TrialRunner = PopulationRunner()  # mypy checks the protocol here
