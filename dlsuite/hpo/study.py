"""Running a study: open or resume it, recover crashed trials, ask/run/tell in N workers, end the parent run.

Crash safety: every trial records its owning process (``dlsuite.owner``) and its MLflow run id as user
attributes, and its worker renews a lease on it (:mod:`dlsuite.hpo.leases`). Before each ask, under the
budget lock (:func:`~dlsuite.hpo.storage.budget_lock`: a file lock on one host, an advisory lock on
PostgreSQL across hosts), trials RUNNING in Optuna whose lease expired (on a journal file also: whose
owner process on this host is gone) are marked FAIL (``dlsuite.requeued``, not counted against the
budget), their parameters are enqueued again, and their MLflow runs are ended KILLED. Finished trials are
in the storage the moment they are told, so a kill loses only the trials that were running.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from dlsuite.errors import ConfigError, DlsuiteError
from dlsuite.hpo.ddp import trial_processes
from dlsuite.hpo.leases import fail_and_requeue, lease, mlflow_end, recover
from dlsuite.hpo.runner import (
    REASON_ATTR,
    RUN_ID_ATTR,
    SUMMARY_ATTR,
    TrainRunner,
    TrialContext,
    TrialOutcome,
    TrialRunner,
    summary_attr,
)
from dlsuite.hpo.samplers import create_pruner, create_sampler
from dlsuite.hpo.spec import StudySpec
from dlsuite.hpo.storage import (
    budget_lock,
    check_storage,
    heartbeat_s,
    open_storage,
    resolve_storage,
)
from dlsuite.hpo.trials import REQUEUED_ATTR, state_counts
from dlsuite.hpo.tuning import tune_variants, tuned_params
from dlsuite.tracking import plot_queue, record, store
from dlsuite.tracking.runs import OWNER_TAG, create_run, log_params, owner_id, reap_orphans

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
STATE_TAG = record.STATE
EXIT_CONFIG = 2


def _quiet_optuna() -> None:
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Tiny trials have fewer batches than Lightning's logging interval; epoch metrics are logged anyway.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # dlsuite runs ask-and-tell and renews the heartbeat itself (see ``lease``), which Optuna does not expect.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def open_study(spec: StudySpec, url: str, worker: int = 0) -> optuna.Study:
    """Create or load the study ``spec.name`` in storage ``url``; refuse a different direction or type."""
    _quiet_optuna()
    seed = None if spec.seed is None else spec.seed + worker  # distinct streams, or workers sample alike
    options = dict(spec.sampler.options)
    if spec.population > 1 and spec.sampler.name == "tpe":
        # A batch of trials is asked before any is told: without the liar TPE proposes near-copies.
        options.setdefault("constant_liar", True)
    sampler = create_sampler(spec.sampler.name, options, seed, spec.grid() if spec.sampler.name == "grid" else None)
    pruner = create_pruner(spec.pruner.name, spec.pruner.options)
    study = optuna.create_study(
        study_name=spec.name,
        storage=open_storage(url),
        sampler=sampler,
        pruner=pruner,
        directions=spec.directions,  # type: ignore[arg-type]
        load_if_exists=True,
    )
    have = [d.name.lower() for d in study.directions]
    if have != spec.directions:
        raise ConfigError(
            f"study {spec.name!r} exists in {url} with directions {have}, not {spec.directions}; "
            "rename the study or remove it"
        )
    kind = study.user_attrs.get(record.ATTR_TYPE)
    if kind is None:
        study.set_user_attr(record.ATTR_TYPE, spec.type)
        study.set_user_attr(record.ATTR_METRICS, [o.metric for o in spec.objectives])
    elif kind != spec.type:
        raise ConfigError(f"study {spec.name!r} exists as type {kind!r}, not {spec.type!r}")
    return study


def counted(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial uses up budget: finished or running, except crashed ones that were re-queued."""
    if t.state == TrialState.WAITING:
        return False
    return not (t.state == TrialState.FAIL and t.user_attrs.get(REQUEUED_ATTR))


def enqueue_pairs(study: optuna.Study, spec: StudySpec) -> int:
    """``compare``: enqueue every (variant, seed) pair not yet run, running or queued; return how many."""
    have = {
        (t.params.get("variant"), t.params.get("seed"))
        for t in study.get_trials(deepcopy=False)
        if counted(t) or t.state == TrialState.WAITING
    }
    have |= {
        (t.system_attrs.get("fixed_params", {}).get("variant"), t.system_attrs.get("fixed_params", {}).get("seed"))
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    }
    from dlsuite.hpo.grouping import order_pairs

    added = 0
    for variant, seed in order_pairs(spec, spec.pairs()):
        if (variant, seed) not in have:
            study.enqueue_trial({"variant": variant, "seed": seed}, user_attrs={"variant": variant, "seed": seed})
            added += 1
    return added


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """The trial's parameters, sampled from the search space (``when`` conditions honoured)."""
    params: dict[str, Any] = {}
    for key, p in spec.space.items():
        if p.when and any(params.get(c) not in vals for c, vals in p.when.items()):
            continue
        if p.type == "categorical":
            params[key] = trial.suggest_categorical(key, p.choices or [])
        elif p.type == "int":
            assert p.low is not None and p.high is not None
            step = 1 if p.log else int(p.step or 1)
            params[key] = trial.suggest_int(key, int(p.low), int(p.high), step=step, log=p.log)
        else:
            assert p.low is not None and p.high is not None
            params[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return params


@dataclass
class WorkerResult:
    """What one worker did."""

    trials: list[TrialOutcome] = field(default_factory=list)
    stopped_by: str = "budget"


def _trial_config(spec: StudySpec, trial: optuna.Trial) -> tuple[Any, dict[str, str], str]:
    """(config or the ConfigError, extra tags, run name) for a trial."""
    tags: dict[str, str] = {}
    if spec.type == "compare":
        variant = str(trial.suggest_categorical("variant", list(spec.variants)))
        seed = int(trial.suggest_categorical("seed", spec.seeds))  # type: ignore[arg-type]
        trial.set_user_attr("variant", variant)
        trial.set_user_attr("seed", seed)
        tuned = tuned_params(trial.study, variant)
        tags = {
            record.VARIANT: variant,
            record.SEED: str(seed),
            **{record.TUNED_PREFIX + k: str(v) for k, v in tuned.items()},
        }
        name = f"{variant}-seed{seed}"
        build = lambda: spec.run_config({"seed": seed, **tuned}, variant=variant)  # noqa: E731
    else:
        params = suggest(trial, spec)
        name = f"{spec.name}-{trial.number:03d} {record.label(params)}".strip()
        build = lambda: spec.run_config(params)  # noqa: E731
    try:
        return build(), tags, name
    except DlsuiteError as exc:
        return exc, tags, name


@dataclass
class Prepared:
    """An asked trial made ready to run: its config (or the error that refused it), tags, run name, context."""

    trial: optuna.Trial
    cfg: Any
    tags: dict[str, str]
    run_name: str
    ctx: TrialContext


def prepare_trial(trial: optuna.Trial, spec: StudySpec, parent_run_id: str | None) -> Prepared:
    """The trial's config (sampled or fixed), its MLflow tags and name, and how it is pruned."""
    cfg, extra, run_name = _trial_config(spec, trial)
    tags = {
        record.STUDY: spec.name,
        record.TRIAL: str(trial.number),
        STATE_TAG: "RUNNING",
        record.STUDY_TYPE: spec.type,
        **extra,
    }
    ctx = TrialContext(parent_run_id, tags, spec.pruner.name != "none", spec.prune_monitor)
    if not isinstance(cfg, DlsuiteError):
        cfg.tracking.run_name = run_name
    return Prepared(trial, cfg, tags, run_name, ctx)


def run_one(
    study: optuna.Study,
    trial: optuna.Trial,
    spec: StudySpec,
    parent_run_id: str | None,
    runner: TrialRunner,
    client: Any,
) -> TrialOutcome:
    """Run one asked trial to its end and tell Optuna and MLflow how it ended."""
    p = prepare_trial(trial, spec, parent_run_id)
    if isinstance(p.cfg, DlsuiteError):
        outcome = TrialOutcome("FAIL", reason=f"invalid trial config: {p.cfg}")
    else:
        try:
            outcome = runner.run(p.cfg, trial, p.ctx)
        except KeyboardInterrupt as exc:
            frozen = study._storage.get_trial(trial._trial_id)
            fail_and_requeue(study, frozen, f"interrupted ({exc or 'SIGINT'})", client)
            raise
    return finish_trial(study, p, spec, outcome, client)


def finish_trial(study: optuna.Study, p: Prepared, spec: StudySpec, outcome: TrialOutcome, client: Any) -> TrialOutcome:
    """Tell Optuna how trial ``p`` ended (its objective values or why not) and tag its MLflow run."""
    trial, run_name, tags, parent_run_id = p.trial, p.run_name, p.tags, p.ctx.parent_run_id
    values: list[float] | None = None
    if outcome.state == "COMPLETE":
        missing = [o.metric for o in spec.objectives if o.metric not in outcome.metrics]
        if missing:
            outcome.state = "FAIL"
            outcome.reason = (
                f"objective metric(s) {missing} not produced; available: {', '.join(sorted(outcome.metrics))}"
            )
        else:
            values = [float(outcome.metrics[o.metric]) for o in spec.objectives]
            if any(v != v for v in values):
                outcome.state, outcome.reason, values = "FAIL", f"objective is NaN: {values}", None
    if outcome.run_id is None and outcome.state == "FAIL" and client is not None:
        from dlsuite.hpo.runner import record_failed_run

        exp = store.experiment_id(client, spec.mlflow_experiment)
        tags = {**tags, record.PARENT: parent_run_id} if parent_run_id else tags
        outcome.run_id = record_failed_run(client, exp, run_name, tags, trial.params, outcome.reason or "")
        trial.set_user_attr(RUN_ID_ATTR, outcome.run_id)
    if outcome.reason:
        trial.set_user_attr(REASON_ATTR, outcome.reason)
    if outcome.metrics:
        trial.set_user_attr(SUMMARY_ATTR, summary_attr(outcome.metrics))
    if outcome.run_id:
        trial.set_user_attr(RUN_ID_ATTR, outcome.run_id)
    state = {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED, "FAIL": TrialState.FAIL}[outcome.state]
    try:
        study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
    except (ValueError, RuntimeError) as exc:  # told already (re-queued by a worker that thought us dead)
        log.warning("trial %d could not be told %s: %s", trial.number, outcome.state, exc)
    mlflow_end(client, outcome.run_id, outcome.state, outcome.reason if outcome.state == "FAIL" else None)
    if outcome.state == "PRUNED" and outcome.run_id and client is not None:
        # MLflow has no PRUNED status and the table shows tags only on request: the name says it.
        client.update_run(outcome.run_id, name=f"{run_name} ({outcome.reason or 'pruned'})")
    return outcome


def work(
    spec: StudySpec,
    url: str,
    parent_run_id: str | None,
    worker: int = 0,
    deadline: float | None = None,
    runner: TrialRunner | None = None,
) -> WorkerResult:
    """One worker: under the budget lock recover, check the budget and ask; then run and tell; repeat.

    With ``spec.population > 1`` it asks up to that many trials at once (never more than the budget
    has left) and trains those that share their structure as populations (:mod:`dlsuite.hpo.batch`).
    """
    from dlsuite.hpo.batch import ask_batch, batch_size, run_batch
    from dlsuite.techniques.speed import cores_reserved

    runner = runner or TrainRunner()
    study = open_study(spec, url, worker)
    base = spec.run_config()
    client = store.client(base.tracking.uri) if base.tracking.enabled else None
    result = WorkerResult()
    # Each trial's figures are drawn by a helper process while the next trial trains; all are
    # logged before the worker returns (dlsuite/tracking/plot_queue.py). Its core is left to it.
    drawing = base.tracking.enabled and base.tracking.plots
    with plot_queue.in_background(start=drawing), cores_reserved(1 if drawing else 0):
        while True:
            if deadline is not None and time.time() >= deadline:
                result.stopped_by = "timeout"
                break
            with budget_lock(url, spec.name):
                recover(study, client, locked=True)
                trials = study.get_trials(deepcopy=False)
                queued = any(t.state == TrialState.WAITING for t in trials)
                sampler = study.sampler
                grid = sampler if isinstance(sampler, optuna.samplers.GridSampler) else None
                exhausted = grid is not None and grid.is_exhausted(study) and not queued
                met = (spec.n_trials is not None and sum(counted(t) for t in trials) >= spec.n_trials) or (
                    spec.type == "compare" and not queued
                )
                done = met or exhausted
                # Done, but another worker's trial may belong to a dead or hung worker: wait until
                # it finishes or its lease expires (then it is re-queued and this worker runs it), so the
                # study ends at its budget with nothing left RUNNING.
                wait = done and any(t.state == TrialState.RUNNING for t in trials)
                if done and not wait:
                    if not met:
                        result.stopped_by = "grid exhausted"
                    break
                if not wait:
                    size = batch_size(study, spec, trials) if spec.population > 1 else 1
                    batch = ask_batch(study, size)
            if wait:
                time.sleep(min(heartbeat_s(), 2))  # cheap to poll; a finished trial frees this worker at once
                continue
            if len(batch) == 1 and spec.population == 1:
                with lease(study, batch[0]):
                    outcome = run_one(study, batch[0], spec, parent_run_id, runner, client)
                show_outcome(worker, batch[0], outcome, spec)
                outcomes = [outcome]
            else:
                outcomes = run_batch(study, batch, spec, parent_run_id, runner, client, worker)
            result.trials += outcomes
            for outcome in outcomes:
                if outcome.state == "FAIL" and outcome.reason and "not produced" in outcome.reason:
                    raise ConfigError(f"study {spec.name}: {outcome.reason}")
    return result


def show_outcome(worker: int, trial: optuna.Trial, outcome: TrialOutcome, spec: StudySpec) -> None:
    """``[worker 0] trial 3 (dropout, seed 1) COMPLETE in 2.1s: test_acc=0.81``."""
    shown = ", ".join(
        f"{o.metric}={outcome.metrics[o.metric]:.4g}" for o in spec.objectives if o.metric in outcome.metrics
    )
    attrs = trial.user_attrs
    what = f" ({attrs['variant']}, seed {attrs['seed']})" if "variant" in attrs else ""
    print(
        f"[worker {worker}] trial {trial.number}{what} {outcome.state} in {outcome.seconds:.1f}s"
        + (f": {shown}" if outcome.state == "COMPLETE" else "")
        + (f" ({outcome.reason})" if outcome.reason else ""),
        flush=True,
    )


# -- the coordinator: parent run, workers, report ------------------------------------------------
def open_parent_run(spec: StudySpec, study: optuna.Study, client: Any) -> str:
    """The study's one MLflow parent run: created on the first run, reopened (RUNNING) on a resume."""
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        try:
            client.get_run(run_id)
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, OWNER_TAG, owner_id())
            return str(run_id)
        except Exception:  # noqa: BLE001  another tracking store: start a parent there
            log.info("parent run %s not in this tracking store; creating one", run_id)
    exp = store.experiment_id(client, spec.mlflow_experiment)
    tags = {
        record.STUDY: spec.name,
        record.STUDY_TYPE: spec.type,
        record.STUDY_PARENT: "true",
        OWNER_TAG: owner_id(),
    }
    run = create_run(client, exp, f"study-{spec.name}", tags)
    run_id = run.info.run_id
    params = {
        "study.type": spec.type,
        "study.sampler": spec.sampler.name,
        "study.pruner": spec.pruner.name,
        "study.objectives": ", ".join(f"{o.metric}:{o.direction}" for o in spec.objectives),
        "study.space": json.dumps(spec.model_dump(mode="json")["space"] or spec.variants)[:6000],
        "study.overrides": json.dumps([*spec.overrides, *spec.sets])[:6000],
        "study.seed": spec.seed,
    }
    log_params(client, run_id, params)
    study.set_user_attr(PARENT_ATTR, run_id)
    return str(run_id)


def assign_gpus(workers: int, gpus: list[str] | None, per: int = 1) -> list[str | None]:
    """The GPUs each worker is pinned to: ``per`` of them (a DDP trial's devices), round-robin, several
    workers may share one; None each without GPUs."""
    if not gpus:
        return [None] * workers
    per = min(per, len(gpus))
    return [",".join(gpus[(i * per + j) % len(gpus)] for j in range(per)) for i in range(workers)]


def default_gpus() -> list[str] | None:
    """The GPUs visible to this process, as CUDA_VISIBLE_DEVICES entries, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g.strip() for g in visible.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


@dataclass
class StudyResult:
    """The outcome of ``study run``: where it is stored, its MLflow parent run, counts by state."""

    name: str
    storage: str
    parent_run_id: str | None
    counts: dict[str, int]
    worker_codes: list[int] = field(default_factory=list)
    view: str | None = None
    """The MLflow UI path (after the server's address) of the study's runs table with its columns."""


def counts_by_state(study: optuna.Study) -> dict[str, int]:
    """Trials per state name, re-queued crashed trials under ``retried`` (see :mod:`dlsuite.hpo.trials`)."""
    return state_counts(study.get_trials(deepcopy=False))


def _spawn(
    spec: StudySpec, url: str, parent: str | None, workers: int, gpus: list[str | None], deadline: float | None
) -> list[int]:
    """Start ``workers`` worker processes on the study and wait for them; return their exit codes."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="dlsuite-study-", delete=False) as f:
        f.write(spec.model_dump_json())
        spec_path = f.name
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(workers):
            env = dict(os.environ)
            if gpus[i] is not None:
                env["CUDA_VISIBLE_DEVICES"] = str(gpus[i])
            cmd = [sys.executable, "-m", "dlsuite.hpo.worker", spec_path, "--storage", url, "--index", str(i)]
            cmd += ["--workers", str(workers)]
            if parent:
                cmd += ["--parent", parent]
            if deadline is not None:
                cmd += ["--deadline", repr(deadline)]
            procs.append(subprocess.Popen(cmd, env=env))
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:  # workers end their runs KILLED and re-queue their trials on SIGTERM
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    finally:
        os.unlink(spec_path)


def run_study(
    spec: StudySpec,
    workers: int = 1,
    gpus: list[str] | None = None,
    runner: TrialRunner | None = None,
) -> StudyResult:
    """Run (or resume) a study to its budget with ``workers`` processes (the report is the caller's:
    ``dlsuite.reports.study.report_study``).

    ``workers == 1`` runs trials in this process; more start worker processes pinned round-robin to
    ``gpus`` (default: every visible GPU; none on CPU).
    """
    if workers < 1:
        raise ConfigError("--workers must be >= 1")
    url = resolve_storage(spec.storage)
    check_storage(url)  # an unreachable server is refused before the study is created
    base = spec.run_config()
    if base.tracking.enabled:
        store.check_uri(base.tracking.uri)
    study = open_study(spec, url)
    client = store.client(base.tracking.uri) if base.tracking.enabled else None
    with budget_lock(url, spec.name):
        recover(study, client, locked=True)
        if client is not None:
            reap_orphans(client)  # a killed study's parent run, among others
        if spec.type == "compare":
            enqueue_pairs(study, spec)
    if spec.type == "compare" and spec.tune:
        tune_variants(spec, study, workers, gpus)  # each tuned variant's own search, once
    # Under the lock: two coordinators (two hosts) starting at once must find one parent run, not make two.
    with budget_lock(url, spec.name):
        parent = open_parent_run(spec, study, client) if client is not None else None
    view = None
    if client is not None:
        from dlsuite.hpo.mlflow_view import share_view

        view = share_view(client, store.experiment_id(client, spec.mlflow_experiment), spec)
    deadline = time.time() + spec.timeout if spec.timeout else None
    # In-process (one worker) the pin must be set before anything initialises CUDA, so the default
    # "every visible GPU" is only looked up for worker processes.
    per = trial_processes(base) if base.trainer.accelerator != "cpu" else 1
    pins = assign_gpus(workers, gpus if gpus is not None else (default_gpus() if workers > 1 else None), per)
    status = "FINISHED"
    codes: list[int] = []
    try:
        if workers == 1:
            if pins[0] is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = pins[0]
            work(spec, url, parent, 0, deadline, runner)
        else:
            codes = _spawn(spec, url, parent, workers, pins, deadline)
            if any(c == EXIT_CONFIG for c in codes):
                raise ConfigError(f"study {spec.name}: a worker stopped on a config error (see its output above)")
            if any(codes):
                # A killed worker is what crash recovery is for: its trial is re-queued below (or by the
                # other workers); the study stops short of its budget only if every worker died.
                log.warning("study %s: worker exit codes %s", spec.name, codes)
                print(f"study {spec.name}: worker exit codes {codes}; run the study again to finish its budget")
            with budget_lock(url, spec.name):
                recover(study, client, locked=True)
        if client is not None and parent is not None:
            from dlsuite.hpo.mlflow_view import record_best

            record_best(client, parent, study, spec)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if client is not None and parent is not None:
            client.set_terminated(parent, status=status)
    return StudyResult(
        spec.name,
        url,
        parent,
        counts_by_state(optuna.load_study(study_name=spec.name, storage=open_storage(url))),
        codes,
        view,
    )
