"""Trials in batches: ask up to ``population`` trials at once, train same-structure ones as populations.

A worker with ``spec.population = P > 1`` asks Optuna for up to P trials under the budget lock (never
more than the budget has left; TPE with a constant liar, so a batch is diverse), groups their configs
with :func:`dlsuite.population.group.plan`, trains each group of two or more as one population
(:class:`~dlsuite.hpo.population.PopulationRunner`) and every other trial with the sequential runner,
printing why. Each trial is told the moment it ends. Every trial of the batch carries its owner and is
leased (heartbeats on PostgreSQL) until it is told, so a worker killed mid-batch leaves every
unfinished trial to :func:`~dlsuite.hpo.study.recover`.

A compare study's trials are fixed: the worker peeks at the queue and asks only the run of queued
trials that share the first one's structure (one population), or the first alone when it cannot
join one; :func:`~dlsuite.hpo.study.enqueue_pairs` queues same-structure variants next to each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from dlsuite.errors import DlsuiteError
from dlsuite.hpo.grouping import alone_whatever_sampled, variant_key
from dlsuite.hpo.runner import TrialOutcome, TrialRunner
from dlsuite.hpo.spec import StudySpec
from dlsuite.hpo.trials import OWNER_ATTR
from dlsuite.tracking.runs import owner_id


def batch_size(study: optuna.Study, spec: StudySpec, trials: Sequence[optuna.trial.FrozenTrial]) -> int:
    """How many trials to ask now: up to ``spec.population`` and what the budget has left; for a
    compare study, the queued run that shares the first queued trial's structure."""
    from dlsuite.hpo.study import counted

    size = spec.population
    if spec.n_trials is not None:
        size = min(size, spec.n_trials - sum(counted(t) for t in trials))
    if spec.type != "compare":
        # Trials that will all train alone anyway are asked one at a time, so the sampler learns from each.
        return 1 if alone_whatever_sampled(spec) else max(1, size)
    waiting = sorted((t for t in trials if t.state == TrialState.WAITING), key=lambda t: t.number)
    keys: dict[str, str | None] = {}

    def key(t: optuna.trial.FrozenTrial) -> str | None:
        variant = str(t.system_attrs.get("fixed_params", {}).get("variant"))
        if variant not in keys:
            keys[variant] = variant_key(spec, study, variant) if variant in spec.variants else None
        return keys[variant]

    if not waiting or key(waiting[0]) is None:
        return 1
    run = 1
    while run < min(size, len(waiting)) and key(waiting[run]) == key(waiting[0]):
        run += 1
    return run


def ask_batch(study: optuna.Study, size: int) -> list[optuna.Trial]:
    """Ask ``size`` trials (fewer when a grid runs out), each owned by this process and leased from now."""
    from dlsuite.hpo.leases import leased_storage

    batch: list[optuna.Trial] = []
    for _ in range(size):
        sampler = study.sampler
        if batch and isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study):
            break
        trial = study.ask()
        # The lease starts with the trial, before the owner is named: a trial seen under the lock
        # without an owner or (on PostgreSQL) without a heartbeat was asked by a process that died
        # in between, and is recovered at once; Optuna never finds a trial with no heartbeat stale.
        if (rdb := leased_storage(study)) is not None:
            rdb.record_heartbeat(trial._trial_id)
        trial.set_user_attr(OWNER_ATTR, owner_id())
        batch.append(trial)
    return batch


def run_batch(
    study: optuna.Study,
    trials: Sequence[optuna.Trial],
    spec: StudySpec,
    parent_run_id: str | None,
    runner: TrialRunner,
    client: Any,
    worker: int = 0,
) -> list[TrialOutcome]:
    """Run asked ``trials``: same-structure groups as populations, the rest one by one; tell each as it ends."""
    from dlsuite.hpo.population import POPULATION_METRICS, PopulationRunner
    from dlsuite.hpo.study import Prepared, fail_and_requeue, finish_trial, lease, prepare_trial, show_outcome
    from dlsuite.population.group import Group, plan

    prepared = [prepare_trial(t, spec, parent_run_id) for t in trials]
    leases: dict[int, contextlib.ExitStack] = {}
    told: dict[int, TrialOutcome] = {}

    def tell(p: Prepared, outcome: TrialOutcome) -> None:
        told[p.trial.number] = finish_trial(study, p, spec, outcome, client)
        leases.pop(p.trial.number).close()  # its heartbeat stops once it is told
        show_outcome(worker, p.trial, outcome, spec)

    try:
        for p in prepared:
            leases[p.trial.number] = stack = contextlib.ExitStack()
            stack.enter_context(lease(study, p.trial))
        valid = []
        for p in prepared:
            if isinstance(p.cfg, DlsuiteError):
                tell(p, TrialOutcome("FAIL", reason=f"invalid trial config: {p.cfg}"))
            else:
                valid.append(p)
        groups = plan([p.cfg for p in valid], max_size=spec.population)
        if spec.pruner.name != "none" and spec.prune_monitor not in POPULATION_METRICS:
            reason = f"a population reports {', '.join(POPULATION_METRICS)}, not the pruned {spec.prune_monitor!r}"
            groups = [Group("sequential", [i], reason) for g in groups for i in g.members]
        for group in groups:
            members = [valid[i] for i in group.members]
            numbers = ", ".join(str(m.trial.number) for m in members)
            if group.runner == "population":
                print(f"[worker {worker}] trials {numbers}: one population of {len(members)}", flush=True)
                PopulationRunner().run_group(
                    [m.cfg for m in members],
                    [m.trial for m in members],
                    [m.ctx for m in members],
                    done=lambda i, outcome, members=members: tell(members[i], outcome),  # type: ignore[misc]
                )
                continue
            for m in members:
                print(f"[worker {worker}] trial {m.trial.number} runs alone: {group.reason}", flush=True)
                tell(m, runner.run(m.cfg, m.trial, m.ctx))
    except KeyboardInterrupt as exc:
        for p in prepared:
            if p.trial.number not in told:
                frozen = study._storage.get_trial(p.trial._trial_id)
                fail_and_requeue(study, frozen, f"interrupted ({exc or 'SIGINT'})", client)
        raise
    finally:
        for stack in leases.values():
            stack.close()
    return [told[p.trial.number] for p in prepared if p.trial.number in told]
