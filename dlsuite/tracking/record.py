"""The MLflow record: every tag, param and study-attribute name the suite writes or reads.

One place owns the names, so writers and readers cannot drift apart (the compare report once read a
``dlsuite.variant`` tag that the study runner wrote as ``variant``). Import the constant; never
write the literal.
"""

from __future__ import annotations

# -- what a run is --------------------------------------------------------------------------------
DATASET = "dlsuite.dataset"
MODEL = "dlsuite.model"
TASK = "dlsuite.task"
CONFIG = "dlsuite.config"
"""The run config's name (YAML stem)."""

# -- its life (tracking/runs.py) ------------------------------------------------------------------
OWNER = "dlsuite.owner"
"""``host:pid:start`` of the process that owns a RUNNING run, to reap it when that process is gone."""
ERROR = "dlsuite.error"
"""Why a run ended FAILED (or a trial failed before its run could start)."""

# -- runs with members (train/protocols.py) -------------------------------------------------------
PROTOCOL = "dlsuite.protocol"
"""``kfold`` or ``bagging`` on the parent run of members."""
FOLD = "dlsuite.fold"
MEMBER = "dlsuite.member"
FINDER = "dlsuite.finder"
"""``lr`` or ``batch_size``: a run recorded by the learning-rate / batch-size finder."""

# -- studies (hpo/) -------------------------------------------------------------------------------
STUDY = "optuna.study"
"""The Optuna study a run belongs to (trial runs and the parent run)."""
TRIAL = "optuna.trial"
STATE = "optuna.state"
"""The Optuna state a trial ended in (COMPLETE, PRUNED, FAIL)."""
FAIL_REASON = "optuna.fail_reason"
STUDY_TYPE = "dlsuite.study_type"
STUDY_PARENT = "dlsuite.study_parent"
"""``true`` on a study's parent run."""
VARIANT = "dlsuite.variant"
"""A compare study's variant of this run."""
SEED = "dlsuite.seed"
"""A compare study's seed of this run."""
TUNED_PREFIX = "dlsuite.tuned."
"""``dlsuite.tuned.<key>``: a value the variant's own search chose (run tag and study user attr)."""
COMPARE_BEST = "dlsuite.compare_best"
PARENT = "mlflow.parentRunId"
"""MLflow's own parent-run tag (nesting in the UI)."""

# -- transfer learning ----------------------------------------------------------------------------
TRANSFER_BACKBONE = "dlsuite.transfer.backbone"
TRANSFER_STRATEGY = "dlsuite.transfer.strategy"
TRANSFER_WEIGHTS = "dlsuite.transfer.weights"
SOURCE_RUN = "dlsuite.source_run"
SOURCE_CHECKPOINT = "dlsuite.source_checkpoint"
SOURCE_MODEL = "dlsuite.source_model"
SOURCE_DATASET = "dlsuite.source_dataset"
FINETUNED_BY = "dlsuite.finetuned_by"

# -- Optuna study and trial user attributes -------------------------------------------------------
ATTR_TYPE = "dlsuite.type"
ATTR_METRICS = "dlsuite.metrics"
ATTR_OWNER = "dlsuite.owner"
ATTR_REQUEUED = "dlsuite.requeued"
ATTR_RETRY_OF = "dlsuite.retry_of"
ATTR_VARIANT = "variant"
ATTR_SEED = "seed"
"""A compare trial's variant and seed: also its Optuna params, so they keep Optuna's plain names."""


# -- summary metrics read across modules ------------------------------------------------------------
BEST_VAL_ACC = "best_val_acc"
"""Validation accuracy of the best epoch; of a bagging parent, the ensemble's (= ENSEMBLE_VAL_ACC)."""
BEST_VAL_LOSS = "best_val_loss"
"""Lowest validation loss over the epochs (a validation objective to minimise)."""
ENSEMBLE_VAL_ACC = "ensemble_val_acc"
ENSEMBLE_VAL_LOSS = "ensemble_val_loss"
"""A bagged ensemble's accuracy and NLL on the validation split (its averaged softmax)."""
MEMBER_BEST_VAL_ACC_MEAN = "member_best_val_acc_mean"
"""A bagging parent's members' mean best validation accuracy (not the ensemble's)."""
ENSEMBLE_METRICS = ("ensemble_test_acc", "ensemble_test_loss", "ensemble_member_test_acc_mean", "ensemble_members")
"""What an ensemble's test adds to a run's summary (snapshot ensembles and bagging parents)."""
SNAPSHOT_METRICS = (*ENSEMBLE_METRICS, "ensemble_last_snapshot_epoch")
TIMER_METRICS = ("epoch_time_s", "train_time_s", "steps_per_s", "compile_time_s")
"""What the epoch timer (``techniques.speed.EpochTimer``) adds to a run's summary."""


def tag_filter(key: str, value: str) -> str:
    """An MLflow ``search_runs`` filter on one tag (backquoted: the names contain dots)."""
    return f"tags.`{key}` = '{value}'"
