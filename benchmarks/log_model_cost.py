"""What logging a run's model costs (``tracking.log_model``): the MLflow 3 logged model of a trained
MNIST-1D CNN, created, pickled, uploaded and linked, timed N times against a SQLite store.

    PYTHONPATH=. .venv/bin/python benchmarks/log_model_cost.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        from dlsuite.config import load_config
        from dlsuite.runner.run import train
        from dlsuite.tracking.model import finish_model, start_model
        from dlsuite.tracking.store import client

        cfg = load_config("configs/mnist1d_cnn.yaml", ["trainer.max_epochs=1", "trainer.progress_bar=false"])
        cfg.tracking.log_model = False
        result = train(cfg)
        c = client()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            finish_model(c, str(result.run_id), start_model(c, str(result.run_id), {}), result.task.model)
            times.append(time.perf_counter() - start)
        print(
            f"log_model: first {times[0]:.3f} s (imports mlflow.pytorch), median {statistics.median(times):.3f} s, "
            f"min {min(times):.3f} s over {args.repeats} "
            f"(run fit {result.metrics['fit_time_s']:.1f} s, {int(result.metrics['num_params'])} params)"
        )


if __name__ == "__main__":
    main()
