"""A :class:`~dlsuite.hpo.runner.TrialRunner` that trains a group of same-structure trials at once.

:meth:`PopulationRunner.run_group` trains the configs of one group (:func:`dlsuite.population.group.plan`)
as one population and reports every member's validation metric to its own trial after each epoch, so
Optuna's pruners act per member. Each member gets a full MLflow child run
(:mod:`dlsuite.hpo.population_runs`). A pruned member is tested at once on its best weights, its run
ends FINISHED and it leaves the population; a member whose validation loss is not finite fails alone
(run FAILED). The others are tested together at the end. Each member is handed to ``done`` as soon
as it ends, so the study tells Optuna then, and a crash later loses no finished member.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import optuna
import torch

from dlsuite.config import RunConfig
from dlsuite.errors import ConfigError
from dlsuite.hpo.runner import TrialContext, TrialOutcome, TrialRunner
from dlsuite.population.group import structure_key, why_not
from dlsuite.population.train import History, Population, build_population, evaluate, fit
from dlsuite.runner.run import summarize_run

#: Validation metrics a population computes (what ``ctx.monitor`` may name).
POPULATION_METRICS = ("val_acc", "val_loss", "val_f1")


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
    """Member ``i``'s first ``epochs`` epochs as the sequential runner's per-epoch records
    (``task.history``: train and validation numbers, their gaps, the learning rate)."""
    out = []
    for e in range(epochs):
        row = {"epoch": float(e), "train_loss": hist.train_loss[e][i]}
        if hist.train_acc:
            row["train_acc"] = hist.train_acc[e][i]
        if hist.val_loss:
            row.update(val_loss=hist.val_loss[e][i], val_acc=hist.val_acc[e][i])
            if hist.val_f1:
                row["val_f1"] = hist.val_f1[e][i]
            if "train_acc" in row:
                row["gap_acc"] = row["train_acc"] - row["val_acc"]
            row["gap_loss"] = row["val_loss"] - row["train_loss"]  # positive when overfitting, as the task's
        if hist.lr:
            row["lr"] = hist.lr[e][i]
        out.append(row)
    return out


def epoch_metrics(hist: History, i: int, epoch: int, cfg: RunConfig) -> dict[str, float]:
    """What member ``i``'s run logs for ``epoch``: its record (less ``epoch``) and its diagnostics."""
    metrics = {k: v for k, v in member_history(hist, i, epoch + 1)[epoch].items() if k != "epoch"}
    if hist.diagnostics:
        diag = {k: v[i] for k, v in hist.diagnostics[epoch].items()}
        if not (cfg.regularization.l1 or cfg.regularization.l2):
            diag.pop("penalty", None)  # a sequential run without penalties logs none
        metrics.update(diag)
    return metrics


def _timer(hist: History) -> dict[str, float]:
    """The population's :class:`~dlsuite.techniques.speed.EpochTimer` numbers (shared by its members)."""
    secs = hist.epoch_seconds
    if not secs:
        return {}
    later = secs[1:] or secs
    out = {"epoch_time_s": statistics.median(later), "train_time_s": sum(secs)}
    steps_per_epoch = hist.steps / max(len(secs), 1)
    if sum(later) > 0:
        out["steps_per_s"] = steps_per_epoch * len(later) / sum(later)
    return out


class PopulationRunner:
    """Trains groups of same-structure trials as populations; a lone trial as a population of one."""

    def run(self, cfg: RunConfig, trial: optuna.Trial, ctx: TrialContext) -> TrialOutcome:
        """The :class:`~dlsuite.hpo.runner.TrialRunner` call: a group of one."""
        return self.run_group([cfg], [trial], ctx)[0]

    def run_group(
        self,
        cfgs: Sequence[RunConfig],
        trials: Sequence[optuna.Trial],
        ctx: TrialContext | Sequence[TrialContext],
        done: Callable[[int, TrialOutcome], None] | None = None,
    ) -> list[TrialOutcome]:
        """Train ``cfgs`` (trial ``trials[i]`` is member ``i``, recorded with ``ctx[i]`` or the one ``ctx``)
        as one population; one outcome per member, each also passed to ``done(i, outcome)`` when it ends."""
        from dlsuite.build import facts
        from dlsuite.data import create_datamodule
        from dlsuite.hpo.population_runs import MemberRuns
        from dlsuite.population.members import member_model
        from dlsuite.techniques.speed import configure_backends
        from dlsuite.tracking.runs import Signals

        ctxs = [ctx] * len(cfgs) if isinstance(ctx, TrialContext) else list(ctx)
        start = time.perf_counter()
        outcomes: list[TrialOutcome | None] = [None] * len(cfgs)

        def end(i: int, outcome: TrialOutcome) -> None:
            outcome.seconds = time.perf_counter() - start  # the population's time so far
            outcomes[i] = outcome
            if done is not None:
                done(i, outcome)

        # The TrialRunner contract: the trials' own errors become FAIL outcomes; KeyboardInterrupt
        # (a BaseException) propagates so that the worker stops. Nothing is written before the
        # data is loaded and the population built (bad input writes nothing).
        try:
            check_group(cfgs, ctxs[0].monitor)
            configure_backends(cfgs[0].trainer)  # threads and matmul precision, as a sequential run sets them
            device = _device(cfgs[0])
            dm = create_datamodule(cfgs[0].data, cfgs[0].seed)  # the data's seed only orders batches
            dm.prepare()
            pop = build_population(cfgs, dm.input_shape, dm.num_classes, device)
            c0 = cfgs[0]
            m = c0.model
            one = member_model(m.name, dict(m.knobs), dm.input_shape, dm.num_classes, m.init, m.init_std, c0.seed)
            run_facts = facts(dm, one)
        except Exception as exc:  # noqa: BLE001
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            for i in range(len(cfgs)):
                end(i, TrialOutcome("FAIL", reason=reason))
            return [o for o in outcomes if o is not None]
        runs = MemberRuns(cfgs, ctxs) if cfgs[0].tracking.enabled else None
        try:
            # SIGTERM/SIGINT end the members KILLED, as a sequential run's: also one whose exception
            # Python dropped (fit checks the record after every step).
            with Signals() as signals:
                self._train(pop, dm, device, trials, ctxs, runs, run_facts, end, signals.check)
        except KeyboardInterrupt as exc:
            if runs is not None:
                runs.end_all("KILLED", f"interrupted ({exc or 'KeyboardInterrupt'})")
            raise
        except Exception as exc:  # noqa: BLE001  the population failed: every member still running fails
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            for i, o in enumerate(outcomes):
                if o is None:
                    if runs is not None:
                        runs.finish(i, "FAILED", error=reason)
                    started = runs is not None and i < len(runs.run_ids)
                    end(i, TrialOutcome("FAIL", run_id=runs.run_ids[i] if runs and started else None, reason=reason))
        finally:
            if runs is not None:
                runs.close()
        return [o for o in outcomes if o is not None]

    def _train(
        self,
        pop: Population,
        dm: Any,
        device: torch.device,
        trials: Sequence[optuna.Trial],
        ctxs: Sequence[TrialContext],
        runs: Any,
        run_facts: dict[str, Any],
        end: Callable[[int, TrialOutcome], None],
        check: Callable[[], None],
    ) -> None:
        from dlsuite.models.cost import cost_metrics

        cfgs = list(pop.cfgs)
        n = len(cfgs)
        if runs is not None:
            runs.start(trials, dm, run_facts)
        ctx = ctxs[0]
        (x, y), (xv, yv), (xt, yt) = dm.splits["train"], dm.splits["val"], dm.splits["test"]
        has_val = len(yv) > 0
        xt, yt = xt.to(device), yt.to(device)
        active = list(range(n))  # original index of each current member (fit keeps the same order)
        classes = list(dm.classes) if getattr(dm, "classes", None) else None
        fit_start = time.perf_counter()

        def run_id(i: int) -> str | None:
            return runs.run_ids[i] if runs is not None else None

        def finish(i: int, state: str, hist: History, epochs: int, reason: str | None, scores: Any, p: int) -> None:
            records = member_history(hist, i, epochs)
            summary = summarize_run(records, scores.member(p, "test") if scores is not None else {})
            summary["num_params"] = float(run_facts["model.num_params"])
            summary["fit_time_s"] = time.perf_counter() - fit_start
            summary.update(cost_metrics(run_facts))
            summary.update(_timer(hist))
            if runs is not None and hist.epoch_seconds:
                summary["mlflow_log_fraction"] = runs.seconds / sum(hist.epoch_seconds)
            if runs is not None:
                status = "FAILED" if state == "FAIL" else "FINISHED"
                matrix = scores.confusion[p].cpu().numpy() if scores is not None else None
                failed = state == "FAIL"
                runs.finish(
                    i, status, None if failed else summary, records, matrix, classes, reason if failed else None
                )
            end(i, TrialOutcome(state, {} if state == "FAIL" else summary, run_id(i), reason))

        def test(positions: list[int]) -> Any:
            index = torch.tensor(positions, dtype=torch.long)
            use_best = has_val and pop.best is not None and cfgs[0].trainer.test_checkpoint == "best"
            state = pop.best if use_best else {**pop.stacked.params, **pop.stacked.buffers}
            assert state is not None
            sub = {k: v.detach()[index.to(v.device)] for k, v in state.items()}
            smoothing = pop.smoothing[index.to(pop.smoothing.device)]
            return evaluate(pop.stacked, xt, yt, cfgs[0].data.eval_batch_size, smoothing, sub, bf16=pop.bf16)

        def report(epoch: int, hist: History) -> list[int]:
            stopped: list[tuple[int, str, str]] = []
            for i in active:
                if runs is not None:
                    runs.log_epoch(i, epoch, epoch_metrics(hist, i, epoch, cfgs[i]))
                loss = hist.val_loss[epoch][i] if has_val else hist.train_loss[epoch][i]
                if not math.isfinite(loss) or not math.isfinite(hist.train_loss[epoch][i]):
                    stopped.append((i, "FAIL", f"diverged: the loss is not finite at epoch {epoch}"))
                    continue
                if ctx.prune and has_val:
                    values = {"val_acc": hist.val_acc, "val_loss": hist.val_loss, "val_f1": hist.val_f1}
                    trials[i].report(values[ctxs[i].monitor][epoch][i], step=epoch)
                    if trials[i].should_prune():
                        stopped.append((i, "PRUNED", f"pruned at epoch {epoch}"))
            if runs is not None:
                runs.epoch_done()
            pruned = [i for i, s, _ in stopped if s == "PRUNED"]
            scores = test([active.index(i) for i in pruned]) if pruned else None
            for i, state, reason in stopped:
                p = pruned.index(i) if state == "PRUNED" else 0
                finish(i, state, hist, epoch + 1, reason, scores if state == "PRUNED" else None, p)
            gone = {i for i, _, _ in stopped}
            active[:] = [i for i in active if i not in gone]
            return list(active)

        val = (xv.to(device), yv.to(device)) if has_val else None
        hist = fit(pop, (x.to(device), y.to(device)), val, on_epoch=report, check=check)
        if active:
            scores = test(list(range(len(active))))
            epochs = len(hist.train_loss)
            for p, i in enumerate(list(active)):
                finish(i, "COMPLETE", hist, epochs, None, scores, p)


if TYPE_CHECKING:
    _IS_A_TRIAL_RUNNER: TrialRunner = PopulationRunner()  # mypy checks the protocol here
