"""What the MLflow UI shows of the suite's runs: experiment kind, run names, dataset inputs, models,
trial states and metrics logged once. Real MLflow on the temporary store of each test."""

from __future__ import annotations

from mlflow import MlflowClient

from dlsuite.tracking import record
from dlsuite.tracking.store import experiment_id
from dlsuite.train.run import train
from tests.conftest import tiny_config


def test_experiments_are_marked_as_model_training(store: str) -> None:
    c = MlflowClient(store)
    made_by_hand = c.create_experiment("old")  # an experiment an older dlsuite (or a user) made
    result = train(tiny_config("tracking.experiment=kind", "trainer.max_epochs=1"))
    assert result.status == "FINISHED"
    assert record.EXPERIMENT_KIND_TAG not in c.get_experiment(made_by_hand).tags
    assert experiment_id(c, "old") == made_by_hand  # the suite's lookup marks it on first use
    for name in ("kind", "old"):
        exp = c.get_experiment_by_name(name)
        assert exp.tags[record.EXPERIMENT_KIND_TAG] == record.EXPERIMENT_KIND_TRAINING, name
