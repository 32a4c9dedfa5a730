"""Train the demonstration configs (configs/demos/) and print the numbers each demo is about.

Usage: python benchmarks/run_demos.py [NAME_GLOB] [--set key=value ...]
Runs are recorded in the MLflow store of the working directory (or $MLFLOW_TRACKING_URI).
"""

from __future__ import annotations

import argparse
import fnmatch
import time
from pathlib import Path

from dlsuite.config import load_config
from dlsuite.runner.run import TrainingDiverged, train
from dlsuite.tracking import store

DEMOS = Path(__file__).resolve().parent.parent / "configs" / "demos"
KEYS = ("test_acc", "best_val_acc", "best_epoch", "final_train_acc", "final_val_acc", "final_gap_acc", "final_gap_loss")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("pattern", nargs="?", default="*")
    p.add_argument("--set", nargs="+", default=[])
    args = p.parse_args()
    rows = []
    for path in sorted(DEMOS.glob("*.yaml")):
        if not fnmatch.fnmatch(path.stem, args.pattern):
            continue
        cfg = load_config(path, ["trainer.progress_bar=false", *args.set])
        t0 = time.perf_counter()
        try:
            res = train(cfg)
            status, m, run_id = res.status, res.metrics, res.run_id
        except TrainingDiverged as exc:
            status, m, run_id = f"FAILED ({str(exc)[:60]})", {}, None
        extra = {}
        if run_id:
            c = store.client(cfg.tracking.uri)
            hist = c.get_metric_history(run_id, "grad_norm_ratio")
            if hist:
                extra["grad_ratio_first_epoch"] = sorted(hist, key=lambda h: h.step)[0].value
                extra["grad_ratio_last_epoch"] = sorted(hist, key=lambda h: h.step)[-1].value
            m = {**m, "epochs_trained": m.get("epochs_trained", float("nan"))}
        row = {"demo": path.stem, "status": status, "s": round(time.perf_counter() - t0, 1)}
        row.update({k: round(m[k], 4) for k in (*KEYS, "epochs_trained") if k in m})
        row.update({k: f"{v:.3g}" for k, v in extra.items()})
        rows.append(row)
        print(row, flush=True)


if __name__ == "__main__":
    main()
