"""Where runs are recorded: the MLflow tracking URI and artifact root.

MLflow >= 3.13 refuses the old ``file:./mlruns`` store, so the default is a SQLite database with an
artifact folder beside it, both inside ``./mlruns/``. ``MLFLOW_TRACKING_URI`` or ``tracking.uri``
point elsewhere (a tracking server for several hosts, for example).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from dlsuite.tracking.record import EXPERIMENT_KIND_TAG, EXPERIMENT_KIND_TRAINING

if TYPE_CHECKING:
    from mlflow import MlflowClient


def resolve_uri(uri: str | None = None) -> str:
    """The tracking URI: explicit, else ``$MLFLOW_TRACKING_URI``, else ``./mlruns/mlflow.db``."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / 'mlruns' / 'mlflow.db').resolve()}"


def artifact_root(uri: str) -> str | None:
    """Artifact location for new experiments: ``<db folder>/artifacts`` for SQLite stores,
    the server's own default otherwise."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "artifacts").resolve().as_uri()
    return None


def client(uri: str | None = None) -> MlflowClient:
    """An MLflow client on the resolved store (creating the SQLite folder if needed)."""
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    resolved = resolve_uri(uri)
    if resolved.startswith("sqlite:///"):
        Path(resolved[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return mlflow.MlflowClient(tracking_uri=resolved)


def experiment_id(c: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created (with our artifact root) when missing, and marked as a
    model-training experiment so MLflow 3's UI opens it on the runs table (not on GenAI traces)."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) is None:  # made by an older dlsuite or by hand: mark it once
            c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND_TRAINING)
        return str(exp.experiment_id)
    try:
        return str(
            c.create_experiment(
                name,
                artifact_location=artifact_root(c.tracking_uri),
                tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND_TRAINING},
            )
        )
    except Exception:
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)
