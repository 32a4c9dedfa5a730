"""The trained network as an MLflow 3 logged model: the runs table's Models column, the run's
final metrics linked to it, loadable with ``mlflow.pytorch.load_model("models:/<model_id>")``.

The model is created through the client (not ``mlflow.pytorch.log_model``), because that function
resolves the experiment and tracking URI from MLflow's global state, while a dlsuite run names its
store and experiment itself. The pickle needs ``dlsuite`` importable where it is loaded.
"""

from __future__ import annotations

import logging
import tempfile
import time
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

MODEL_NAME = "model"


def start_model(client: Any, run_id: str, tags: dict[str, str], name: str = MODEL_NAME) -> str:
    """Create the run's logged model ``name`` (PENDING until its files are uploaded); return its id."""
    run = client.get_run(run_id)
    lm = client.create_logged_model(
        experiment_id=run.info.experiment_id,
        name=name,
        source_run_id=run_id,
        tags=tags,
        model_type="pytorch",
    )
    return str(lm.model_id)


def finish_model(client: Any, run_id: str, model_id: str, model: nn.Module) -> None:
    """Save ``model`` in MLflow's pytorch flavour, upload it, mark it READY and an output of the run.

    On failure the model is marked FAILED and the error logged; the run itself does not fail.
    """
    import mlflow.pytorch
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper pickles poorly: its module
    try:
        with tempfile.TemporaryDirectory(prefix="dlsuite-model-") as tmp:
            lm = client.get_logged_model(model_id)
            meta = Model(artifact_path=lm.artifact_location, run_id=run_id, model_id=model_id, model_uuid=model_id)
            # Explicit requirements: MLflow would otherwise infer them by loading the model in a subprocess.
            reqs = [f"torch=={torch.__version__.split('+')[0]}"]
            # Pickle, not MLflow's default pt2 (torch.export): export needs an example input and fails
            # on models with data-dependent control flow; a dlsuite run is already trusted code.
            # MLflow warns about pickle on every save; the choice is made here, once, so it is quiet.
            quiet = logging.getLogger("mlflow.pytorch")
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                mlflow.pytorch.save_model(
                    model, f"{tmp}/model", mlflow_model=meta, pip_requirements=reqs, serialization_format="pickle"
                )
            finally:
                quiet.setLevel(level)
            client.log_model_artifacts(model_id, f"{tmp}/model")
        client.finalize_logged_model(model_id, LoggedModelStatus.READY)
        client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])
    except Exception as exc:  # noqa: BLE001  the trained run is worth more than its model entry
        log.warning("could not log the model of run %s: %s", run_id, exc)
        client.finalize_logged_model(model_id, LoggedModelStatus.FAILED)


def linked_metrics(metrics: dict[str, float], model_id: str | None) -> list[Any]:
    """``metrics`` as MLflow Metric records at step 0, linked to ``model_id`` when given."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    return [Metric(k, float(v), ts, 0, model_id=model_id) for k, v in metrics.items()]
