"""What a study shows in the MLflow UI: the best trial on the parent run, and a saved runs-table view.

The runs table shows no metric or parameter column by default, and MLflow offers no setting for the
default. It does read shared views from experiment tags: each study writes one whose filter keeps its
trials, sorted by the first objective, with that metric, the searched keys (or variant and seed) and the
trial state as columns, and prints the address that opens it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import optuna
from optuna.trial import TrialState

from dlsuite.hpo.runner import RUN_ID_ATTR
from dlsuite.hpo.spec import StudySpec
from dlsuite.tracking import record

log = logging.getLogger(__name__)


def view_key(study_name: str) -> str:
    """The study's share key (tag keys allow letters, digits, ``_-./`` and spaces)."""
    return "dlsuite-" + re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)


def runs_view(spec: StudySpec) -> dict[str, Any]:
    """The runs-table view of a study's trials: filter, sort and columns."""
    metrics = [o.metric for o in spec.objectives]
    if spec.type == "compare":
        varied = [record.column("tags", "variant"), record.column("tags", "seed")]
    else:
        varied = [record.column("params", k) for k in spec.space]
    name = spec.name.replace("'", "\\'")
    return {
        # Trials only: with the parent in the result the trials would be folded under it.
        "searchFilter": f"tags.`optuna.study` = '{name}' AND tags.`optuna.trial` LIKE '%'",
        "orderByKey": record.column("metrics", metrics[0]),
        "orderByAsc": spec.objectives[0].direction == "minimize",
        "selectedColumns": [
            *(record.column("metrics", m) for m in metrics),
            *varied,
            record.column("tags", record.TRIAL_STATE_TAG),
            record.column("attributes", "Dataset"),
            record.column("attributes", "Models"),
        ],
    }


def share_view(client: Any, experiment_id: str, spec: StudySpec) -> str:
    """Write the study's runs-table view to its experiment; return the UI path that opens it."""
    key = view_key(spec.name)
    client.set_experiment_tag(experiment_id, record.SHARED_VIEW_PREFIX + key, json.dumps(runs_view(spec)))
    return f"#/experiments/{experiment_id}/runs?viewStateShareKey={key}"


def record_best(client: Any, parent_run_id: str, study: optuna.Study, spec: StudySpec) -> None:
    """Put the best trial's objective values (as the same metrics) and searched values on a search
    study's parent run (a compare study's best is a variant over seeds: its report names it).

    Values go in as params under the trials' own keys, so the parent row lines up with its trials'
    columns; MLflow params cannot change, so a resumed study whose best moved records the new values as
    ``best.<key>`` tags instead. Several objectives: the first trial of the Pareto front.
    """
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    if spec.type == "compare":
        return  # its best is a variant over seeds, not one trial: the comparison report names it
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return
    best = study.best_trials[0] if len(spec.objectives) > 1 else study.best_trial
    values = best.values or []
    now = int(time.time() * 1000)
    metrics = [Metric(o.metric, float(v), now, 0) for o, v in zip(spec.objectives, values)]
    client.log_batch(parent_run_id, metrics=metrics)
    client.set_tag(parent_run_id, record.BEST_TRIAL_TAG, str(best.number))
    if best.user_attrs.get(RUN_ID_ATTR):
        client.set_tag(parent_run_id, record.BEST_RUN_TAG, str(best.user_attrs[RUN_ID_ATTR]))
    for key, value in best.params.items():
        client.set_tag(parent_run_id, record.BEST_PREFIX + key, str(value))
    try:
        client.log_batch(parent_run_id, params=[Param(k, str(v)) for k, v in best.params.items()])
    except MlflowException as exc:  # a resumed study found a better trial: the tags above hold it
        log.info("parent run %s keeps its first best params: %s", parent_run_id, exc)
