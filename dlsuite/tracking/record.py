"""Names the suite writes into MLflow: experiment tags, run tags and params, and small helpers.

One flat module of constants so that every writer and every reader (reports, tests, the UI docs)
agree on a name. Tags MLflow itself reads (``mlflow.*``) are named here too, with where they come from.
"""

from __future__ import annotations

# -- experiment tags ---------------------------------------------------------------------------
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""MLflow 3's UI opens an experiment on the page its kind names; without it the UI may infer a GenAI
experiment and open on Traces. The values are the UI's ``ExperimentKind`` enum (mlflow 3.17 JS bundle)."""
EXPERIMENT_KIND_TRAINING = "custom_model_development"
"""``ExperimentKind.CUSTOM_MODEL_DEVELOPMENT``, shown as "Machine learning": the UI opens on the runs table."""

# -- run tags ----------------------------------------------------------------------------------
TRIAL_STATE_TAG = "optuna.state"
"""How a study trial ended in Optuna terms (RUNNING, COMPLETE, PRUNED, FAIL), beside MLflow's run status,
which cannot say PRUNED: a pruned trial's run ends FINISHED (it was stopped on purpose, then tested and
logged like any other; KILLED means interrupted or crashed) and its name ends ``(pruned at epoch N)``."""
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
