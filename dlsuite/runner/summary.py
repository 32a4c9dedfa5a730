"""The names of the numbers a run's summary can hold, declared without importing the runner.

Study files are checked against :func:`summary_names` before a trial runs (an objective no run produces
is refused), so this module stays light: it reads the task specs and the record's name lists.
"""

from __future__ import annotations

from dlsuite.config import RunConfig
from dlsuite.models.cost import COST_METRICS
from dlsuite.tasks import TASK_SPECS
from dlsuite.tracking import record

# The last epoch's numbers a summary repeats as ``final_<name>``, and the names train() adds itself.
FINAL_KEYS = ("train_acc", "train_loss", "gap_acc", "gap_loss", "val_acc", "val_loss")
RUN_KEYS = (
    record.BEST_VAL_ACC,
    "best_epoch",
    record.BEST_VAL_LOSS,
    "epochs_trained",
    "num_params",
    "fit_time_s",
    "mlflow_log_fraction",
)


def summary_names(cfg: RunConfig) -> set[str]:
    """Every summary metric name a run of ``cfg`` can produce, from the producers' own declarations.

    Study files are checked against it (an objective no run produces is refused before a trial
    runs); ``tests/test_studies.py`` checks that real runs produce nothing outside it.
    """
    from dlsuite.runner import protocols

    kind = protocols.protocol_of(cfg)
    if kind is not None:
        return protocols.protocol_metric_names(kind, cfg, summary_names(protocols.member_config(cfg, kind)))
    # what each stage reports (loss, acc, ...), as the task declares it: val_loss -> loss
    stage = tuple(m.removeprefix("val_") for m in TASK_SPECS[cfg.task.name].val_metrics)
    # summarize() reports accuracy and loss numbers only for tasks that measure them (reconstruction has no acc)
    measured = {k for k in FINAL_KEYS if k.rsplit("_", 1)[1] in stage}
    run_keys = {k for k in RUN_KEYS if not k.startswith("best_") or k == "best_epoch" or k[5:] in measured}
    if "val_acc" not in measured:
        run_keys.discard("best_epoch")  # the epoch of the best validation accuracy
    names = {f"test_{m}" for m in stage} | {f"final_{k}" for k in measured} | run_keys
    names |= set(COST_METRICS) | set(record.TIMER_METRICS)
    if cfg.regularization.ensemble is not None:  # a snapshot ensemble (bagging is a protocol, above)
        names |= set(record.SNAPSHOT_METRICS)
    return names
