"""A trial trained by several processes (DDP): ``python -m dlsuite.hpo.ddp JOB`` per trial.

Lightning's ``ddp`` strategy starts ranks 1..N-1 by running the current command again. Inside a study
worker that command asks Optuna for trials: a second rank would start a second trial. So a DDP trial is
trained in a process of its own, started by the worker for that trial only: its rank 0 opens the same
trial in the shared storage, records the one MLflow run and reports to the pruner; Lightning re-runs
*this* module for the other ranks, which train without tracking and without touching the study. The
pruning decision is taken once, by rank 0, and broadcast to every rank
(:class:`~dlsuite.hpo.runner.TrialCallback`), so every rank stops after the same epoch. The worker keeps
the trial's lease and tells its outcome, as for any other trial. A fresh process per trial also keeps
what Lightning leaves behind (``LOCAL_RANK`` and ``MASTER_PORT`` in the environment, the process group)
out of the worker's next trial.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlsuite.config import RunConfig

if TYPE_CHECKING:  # checking a study file imports this module: keep it light
    import optuna

    from dlsuite.hpo.runner import TrialContext, TrialOutcome

# Strategies that Lightning launches by running the command again (the subprocess-script launcher).
# The spawn/fork variants pickle the trainer into children, where the trial's callback would not report back.
SCRIPT_STRATEGIES = ("ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")


def is_multi_process(cfg: RunConfig) -> bool:
    """Whether ``cfg`` trains with several processes (DDP or several devices)."""
    t = cfg.trainer
    return t.devices not in (1, "1", [0], "auto") or "ddp" in t.strategy or "fsdp" in t.strategy


def check_trial_devices(cfg: RunConfig) -> str | None:
    """Why a study trial cannot train with ``cfg``'s devices and strategy, or None when it can."""
    t = cfg.trainer
    if t.num_nodes != 1:
        return "a study trial trains on one host (trainer.num_nodes=1); spread a study over hosts with workers"
    if is_multi_process(cfg) and t.strategy not in SCRIPT_STRATEGIES:
        return (
            f"a study trial on several devices needs trainer.strategy in {', '.join(SCRIPT_STRATEGIES)} "
            f"(not {t.strategy!r})"
        )
    return None


def storage_url(storage: optuna.storages.BaseStorage) -> str:
    """The URL (or journal path) a study's storage was opened from, for another process to open."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if isinstance(storage, JournalStorage) and isinstance(storage._backend, JournalFileBackend):
        return str(storage._backend._file_path)
    inner = getattr(storage, "_backend", storage)  # through Optuna's _CachedStorage
    if isinstance(inner, optuna.storages.RDBStorage):
        return str(inner.url)
    raise TypeError(f"cannot hand a {type(inner).__name__} to a DDP trial process")


def run_ddp_trial(cfg: RunConfig, trial: optuna.Trial, ctx: TrialContext) -> TrialOutcome:
    """Train ``cfg`` as ``trial`` in a process group of its own; its rank 0 writes the outcome back."""
    import torch

    from dlsuite.hpo.runner import RUN_ID_ATTR, TrialOutcome

    study = trial.study
    job = {
        "config": cfg.model_dump(mode="json"),
        "storage": storage_url(study._storage),
        "study": study.study_name,
        "trial_id": trial._trial_id,
        "number": trial.number,
        # the study's own pruner (with its options): rank 0 asks it exactly as the worker would
        "pruner": pickle.dumps(study.pruner).hex(),
        "ctx": asdict(ctx),
        "threads": max(1, torch.get_num_threads() // max(1, trial_processes(cfg))),
    }
    with tempfile.TemporaryDirectory(prefix="dlsuite-ddp-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "outcome.json"
        job["out"] = str(out_path)
        job_path.write_text(json.dumps(job))
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "dlsuite.hpo.ddp", str(job_path)])
        try:
            code = proc.wait()
        except KeyboardInterrupt:  # SIGTERM or Ctrl-C in the worker: rank 0 ends its run KILLED
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        if out_path.is_file():  # its time: the whole trial, starting the processes included
            return TrialOutcome(**{**json.loads(out_path.read_text()), "seconds": time.perf_counter() - start})
    # Rank 0 died before it could write (killed, out of memory): the run it began is ended by the caller.
    run_id = study._storage.get_trial(trial._trial_id).user_attrs.get(RUN_ID_ATTR)
    reason = f"the DDP trial's processes exited with code {code}"
    return TrialOutcome("FAIL", run_id=run_id, reason=reason, seconds=time.perf_counter() - start)


def trial_processes(cfg: RunConfig) -> int:
    """How many processes (devices) one trial of ``cfg`` trains with."""
    if not is_multi_process(cfg):
        return 1
    d = cfg.trainer.devices
    if isinstance(d, list):
        return len(d)
    try:
        return max(1, int(d))
    except ValueError:
        return 1


def _rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def main(argv: list[str] | None = None) -> int:
    """Train one DDP trial from a job file (rank 0), or one of its other ranks (started by Lightning)."""
    import signal
    import warnings

    import optuna
    import torch

    from dlsuite.hpo.runner import TrainRunner, TrialContext
    from dlsuite.runner.quiet import quiet
    from dlsuite.tracking.runs import die_with_parent

    die_with_parent()  # a killed worker takes its trial's ranks with it; a killed rank 0 its other ranks
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    quiet()
    # On a SLURM host Lightning suggests srun; a trial's ranks are started by this module, not by srun.
    warnings.filterwarnings("ignore", message=".*The `srun` command is available.*")
    args = sys.argv[1:] if argv is None else argv
    job: dict[str, Any] = json.loads(Path(args[0]).read_text())
    torch.set_num_threads(int(job["threads"]))
    cfg = RunConfig.model_validate(job["config"])
    ctx = TrialContext(**job["ctx"])
    trial: optuna.Trial | None = None
    if _rank() == 0:
        from dlsuite.hpo.storage import open_storage

        pruner = pickle.loads(bytes.fromhex(job["pruner"]))  # noqa: S301  written by our worker
        # The trial's parameters are sampled already; a sampler that writes nothing when a Trial is made
        # (CMA-ES keeps state in trial attributes) keeps rank 0 from sampling a second time.
        sampler = optuna.samplers.RandomSampler()
        study = optuna.load_study(
            study_name=job["study"], storage=open_storage(job["storage"]), sampler=sampler, pruner=pruner
        )
        trial = optuna.Trial(study, int(job["trial_id"]))
    outcome, cb = TrainRunner().run_here(cfg, trial, ctx)
    print(f"[trial {job['number']}] DDP rank {_rank()} stopped after {cb.epochs} epochs", flush=True)
    if trial is not None:
        Path(job["out"]).write_text(json.dumps(asdict(outcome)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
