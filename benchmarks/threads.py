"""Torch CPU threads for one run: the default MNIST-1D CNN trained for a few epochs with
``trainer.threads`` = 1, 2 and auto, each in a fresh process, against the machine's load.

    PYTHONPATH=. .venv/bin/python benchmarks/threads.py [--epochs 5] [--repeats 1]

Prints one line per setting: the run's fit time, the thread count ``auto`` chose, the 1-minute load
average before the run. Run it on a quiet machine and again under load (e.g. other jobs on every core).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = """
import json, sys, torch
from dlsuite.config import load_config
from dlsuite.runner.run import train
cfg = load_config("configs/mnist1d_cnn.yaml", sys.argv[1:])
r = train(cfg)
print("RESULT", json.dumps({"fit_time_s": r.metrics["fit_time_s"], "threads": torch.get_num_threads()}))
"""


def one(threads: str, epochs: int, tmp: str) -> dict[str, float]:
    """Fit time and thread count of one run in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # let trainer.threads decide
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    args = [f"trainer.threads={threads}", f"trainer.max_epochs={epochs}", "trainer.progress_bar=false"]
    args += ["tracking.plots=false", "tracking.log_model=false", "tracking.diagnostics.plots=false"]
    out = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT ") :]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    print(f"cores {len(os.sched_getaffinity(0))}, epochs {args.epochs}")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for threads in ("1", "2", "auto"):
                load = os.getloadavg()[0]
                r = one(threads, args.epochs, tmp)
                print(f"threads={threads:4s} used {r['threads']}: fit {r['fit_time_s']:.1f} s (load before {load:.1f})")


if __name__ == "__main__":
    main()
