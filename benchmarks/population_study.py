"""Trials per hour of a study run sequentially and with populations, and the members' MLflow logging share.

Runs the same study file (default ``studies/quick.yaml``) with ``--population 1`` and ``--population P``,
alternating, each time into a fresh temporary folder (own journal, own SQLite MLflow store, the data
cache shared; the store's tables are created before the clock starts, as a user's store exists after their
first run), in this process as ``dlsuite study run`` does. Reported per mode: wall time, trials/hour
(finished trials over wall time, pruned ones included), and for population runs the members'
``mlflow_log_fraction`` (the training loop's time on per-epoch MLflow writes over the population's
epoch time; median [max]) and the number of populations. The machine's load (``os.getloadavg``) is
printed with each figure: on a shared machine the figures move with it.

Usage: ``python -m benchmarks.population_study [--study studies/quick.yaml] [--population 8]``
``[--repeats 1] [--set KEY=VALUE ...]``. It reports; it never fails on speed.

``--quality 0,1,2``: search quality instead of speed. For each study seed, the same search sequentially
and with populations; prints each best value and the mean +- sd per mode (issue 13: the best validation
accuracy after 48 trials of the five-hyperparameter study, ``--study studies/mnist1d_cnn_five.yaml
--set n_trials=48 ...``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(study: Path, population: int, sets: list[str]) -> dict[str, float]:
    """Run the study once in a fresh folder; return its figures."""
    import mlflow

    from dlsuite.hpo.spec import load_study_spec
    from dlsuite.hpo.study import run_study
    from dlsuite.tracking import record, store

    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="dlsuite-bench-") as tmp:
        os.chdir(tmp)
        uri = f"sqlite:///{tmp}/mlruns/mlflow.db"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        try:
            spec = load_study_spec(study, [*sets, f"population={population}"])
            store.client(uri)  # created before the clock: a user's store exists after their first run
            start = time.perf_counter()
            result = run_study(spec)
            wall = time.perf_counter() - start
            best = _best_value(spec.name, result.storage)
            client = mlflow.MlflowClient(uri)
            exp = client.get_experiment_by_name(spec.mlflow_experiment)
            kids = [r for r in client.search_runs([exp.experiment_id], max_results=5000) if record.TRIAL in r.data.tags]
        finally:
            os.chdir(cwd)
    members = [r for r in kids if record.POPULATION in r.data.tags]
    fractions = [r.data.metrics["mlflow_log_fraction"] for r in members if "mlflow_log_fraction" in r.data.metrics]
    finished = sum(v for k, v in result.counts.items() if k in ("COMPLETE", "PRUNED"))
    return {
        "wall_s": wall,
        "trials_per_hour": finished / wall * 3600,
        "finished": finished,
        "members": len(members),
        "populations": len({r.data.tags[record.POPULATION] for r in members}),
        "log_fraction_median": statistics.median(fractions) if fractions else float("nan"),
        "log_fraction_max": max(fractions) if fractions else float("nan"),
        "best": best,
        "load": os.getloadavg()[0],
    }


def _best_value(name: str, storage: str) -> float:
    """The study's best objective value (its ``metric``), NaN when no trial completed."""
    import optuna

    from dlsuite.hpo.storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return study.best_value if done else float("nan")


def quality(study: Path, population: int, seeds: list[int], sets: list[str]) -> None:
    """Best value of the same search run sequentially and with populations, for each study seed.

    Search quality, not speed: the study's sampler seed (``seed=``) varies, everything else is the same;
    the two modes agree when their means lie within each other's spread.
    """
    best: dict[int, list[float]] = {1: [], population: []}
    for seed in seeds:
        for size in (1, population):
            fig = run_once(study, size, [*sets, f"seed={seed}"])
            best[size].append(fig["best"])
            print(f"seed={seed} population={size}: best={fig['best']:.4f} finished={fig['finished']:.0f}", flush=True)
    for size, values in best.items():
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        print(f"population={size}: best {statistics.mean(values):.4f} +- {sd:.4f} (mean +- sd over seeds {seeds})")


def main() -> None:
    """Print the figures of each run, then the ratio of the medians."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", default=str(ROOT / "studies" / "quick.yaml"))
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--set", nargs="*", default=[], dest="sets")
    p.add_argument("--quality", help="study seeds, e.g. 0,1,2: compare the best value, not the speed")
    args = p.parse_args()
    from dlsuite.runner.quiet import quiet

    quiet()
    if args.quality:
        quality(Path(args.study).resolve(), args.population, [int(s) for s in args.quality.split(",")], args.sets)
        return
    rates: dict[int, list[float]] = {1: [], args.population: []}
    for r in range(args.repeats):
        for size in [1, args.population] if r % 2 == 0 else [args.population, 1]:
            fig = run_once(Path(args.study).resolve(), size, args.sets)
            rates[size].append(fig["trials_per_hour"])
            text = ", ".join(f"{k}={v:.3g}" for k, v in fig.items())
            print(f"population={size}: {text}", flush=True)
    seq, pop = statistics.median(rates[1]), statistics.median(rates[args.population])
    print(f"trials/hour: sequential {seq:.0f}, population {pop:.0f} ({pop / seq:.2f}x)")


if __name__ == "__main__":
    main()
