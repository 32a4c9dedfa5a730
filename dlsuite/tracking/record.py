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
CREATION = "dlsuite.creation"
"""On runs in a tracking server: a random token per creation, so that a creation MLflow's HTTP client
sent twice (its first answer lost to a server restart) is found and its copy deleted."""

# -- runs with members (train/protocols.py) -------------------------------------------------------
PROTOCOL = "dlsuite.protocol"
"""``kfold`` or ``bagging`` on the parent run of members."""
FOLD = "dlsuite.fold"
MEMBER = "dlsuite.member"
POPULATION = "dlsuite.population"
"""On a run trained as a population member, the same on every member's run: in a study (``study run
--population``) the population's name, ``<owner host:pid:start>/<8 hex>``; from ``train --seeds`` the
MLflow run id of the seeds' parent run."""
FINDER = "dlsuite.finder"
"""``lr`` or ``batch_size``: a run recorded by the learning-rate / batch-size finder."""

# -- studies (hpo/) -------------------------------------------------------------------------------
STUDY = "optuna.study"
"""The Optuna study a run belongs to (trial runs and the parent run)."""
TRIAL = "optuna.trial"
STATE = "optuna.state"
"""How a study trial ended in Optuna terms (RUNNING, COMPLETE, PRUNED, FAIL), beside MLflow's run status,
which cannot say PRUNED: a pruned trial's run ends FINISHED (it was stopped on purpose, then tested and
logged like any other; KILLED means interrupted or crashed) and its name ends ``(pruned at epoch N)``."""
TRIAL_STATE_TAG = STATE
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
ATTR_LEASE = "dlsuite.lease"
"""Trial system attribute on a journal file: when its worker last renewed the trial's lease (hpo/leases.py)."""
ATTR_SUMMARY = "dlsuite.summary"
"""A trial's run summary (every number the run produced), so reports need not ask MLflow."""
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


# -- experiment tags ---------------------------------------------------------------------------
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""MLflow 3's UI opens an experiment on the page its kind names; without it the UI may infer a GenAI
experiment and open on Traces. The values are the UI's ``ExperimentKind`` enum (mlflow 3.17 JS bundle)."""
EXPERIMENT_KIND_TRAINING = "custom_model_development"
"""``ExperimentKind.CUSTOM_MODEL_DEVELOPMENT``, shown as "Machine learning": the UI opens on the runs table."""

# -- run tags ----------------------------------------------------------------------------------
BEST_TRIAL_TAG = "dlsuite.best_trial"
"""On a study's parent run: the number of the best trial (first best for several objectives)."""
BEST_RUN_TAG = "dlsuite.best_run_id"
"""On a study's parent run: the MLflow run id of the best trial."""

# -- a study's parent run ---------------------------------------------------------------------
BEST_PREFIX = "best."
"""Tags ``best.<key>`` on a study's parent run: the best trial's sampled values (the same values are also
logged as params under the trials' own keys, once: MLflow params cannot change; the objective metrics
are logged on the parent under their own names, so the parent row lines up with its trials' columns)."""

# -- dataset inputs ----------------------------------------------------------------------------
DATASET_CONTEXT_KEY = "mlflow.data.context"
"""Input tag MLflow shows beside a dataset in the runs table (``mlflow.utils.mlflow_tags.MLFLOW_DATASET_CONTEXT``)."""
DATASET_CONTEXT_TRAIN = "training"
"""The context of a run's dataset input: one input holds the whole split (sizes in its profile)."""

OVERRIDES_TAG = "dlsuite.overrides"
"""On a ``dlsuite train`` run: the ``--set`` overrides it was started with, as typed."""


# -- run names ---------------------------------------------------------------------------------
def short_value(v: object) -> str:
    """A value as a run name shows it: floats to 3 significant digits, the rest as text."""
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def label(values: dict[str, object], width: int = 60) -> str:
    """``lr=0.00312 batch_size=64``: dotted keys shortened to their last part, cut to ``width``."""
    text = " ".join(f"{k.rsplit('.', 1)[-1]}={short_value(v)}" for k, v in values.items())
    return text if len(text) <= width else text[: width - 1] + "…"


def numbered(base: str, existing: list[str]) -> str:
    """``base-N``, N one more than the highest ``base-<n>`` in ``existing`` (a run name may carry a
    label after a space), so runs of one config are told apart in the order they were started."""
    import re

    pattern = re.compile(re.escape(base) + r"-(\d+)(?: .*)?")
    seen = [int(m.group(1)) for name in existing if (m := pattern.fullmatch(name))]
    return f"{base}-{max(seen, default=0) + 1}"


# -- MLflow UI views -------------------------------------------------------------------------------
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
"""Experiment tag prefix MLflow's UI reads a shared runs-table view from (filter, sort, columns); the
page ``#/experiments/<id>/runs?viewStateShareKey=<key>`` opens it (mlflow 3.17 JS bundle). The UI has no
other server-side way to choose columns: its default shows Dataset, Models and Source, no metric or param."""


def column(kind: str, name: str) -> str:
    """A runs-table column id as the UI writes it: ``metrics.`test_acc```, ``params.`optim.lr```."""
    return f"{kind}.`{name}`"


# -- dlsuite train --seeds (runner/seeds.py) -------------------------------------------------------
SEEDS = "dlsuite.seeds"
"""On a ``train --seeds`` parent run: its seeds, comma-separated (``0,1,2,3``)."""
SEEDS_RUNNER = "dlsuite.seeds_runner"
"""On a ``train --seeds`` parent run: ``population`` (one vectorised population) or ``sequential``."""
SEEDS_FALLBACK = "dlsuite.seeds_fallback"
"""On a ``train --seeds`` parent run that fell back to sequential runs: why (one line)."""
SEEDS_METRIC_PREFIXES = ("test_", "best_val_", "final_")
"""The members' final numbers a ``train --seeds`` parent summarises over its seeds."""
SEEDS_STATS = ("mean", "ci_low", "ci_high")
"""What the parent records of each: ``test_acc_mean``, ``test_acc_ci_low``, ``test_acc_ci_high`` (95%, Student's t)."""
SEEDS_COUNT = "seeds_n"
"""On a ``train --seeds`` parent run: how many seeds finished (the n of the intervals)."""


def seeds_metric(metric: str, stat: str) -> str:
    """The parent's name for ``stat`` (one of :data:`SEEDS_STATS`) of ``metric`` over seeds: ``test_acc_ci_low``."""
    return f"{metric}_{stat}"
