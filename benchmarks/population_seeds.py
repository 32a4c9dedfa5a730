"""Runs per hour of an N-seed MNIST-1D CNN training: one run per seed vs one population (``train --seeds``).

Both ways do the same work and record the same MLflow content, as ``dlsuite train CONFIG --seeds 0-31``
does: ``configs/mnist1d_cnn.yaml`` (the paper's CNN, Adam 1e-2, batch 100, validation on 1,000 extra
sequences, best epoch tested) for ``--epochs`` epochs, one parent run and one tracked child per seed
(params, dataset, per-epoch metrics, test metrics, the two plots), into a fresh SQLite store in a
temporary folder. As study trials: no logged model; per-layer diagnostics off on both sides (the
population does not compute them). ``sequential`` is :func:`dlsuite.runner.seeds.train_seeds` with
``sequential=True``: N x the normal ``train`` path (Lightning), as a study of N seeds trains them;
``population`` is the same call as ``train --seeds``. The two alternate within each repeat (the order
rotates) so the slow phases of a shared machine hit them alike. Wall time covers everything the
command does after the config is loaded (data build, runs, writes).

Usage: ``python -m benchmarks.population --seeds32 [--n-seeds 32] [--epochs 20] [--train-samples N]``
``[--repeats 1] [--threads auto] [--precision bf16-mixed]``. It reports; it never fails on speed.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dlsuite.build import load_run_config
from dlsuite.runner.quiet import quiet
from dlsuite.runner.seeds import train_seeds

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "mnist1d_cnn.yaml")
SAME_RECORD = ["tracking.log_model=false", "tracking.diagnostics.enabled=false", "trainer.progress_bar=false"]


def _timed(mode: str, overrides: list[str], seeds: list[int]) -> float:
    """Seconds for one ``train --seeds`` call in ``mode`` (``sequential`` or ``population``)."""
    cfg = load_run_config(CONFIG, overrides)
    start = time.perf_counter()
    result = train_seeds(cfg, seeds, overrides, sequential=mode == "sequential")
    seconds = time.perf_counter() - start
    if result.runner != mode or result.failed:
        raise SystemExit(f"{mode}: ran as {result.runner}, failed seeds {sorted(result.failed)}")
    return seconds


def run(
    n_seeds: int, epochs: int, train_samples: int | None, repeats: int, threads: str, precision: str = "32-true"
) -> None:
    """Measure both ways ``repeats`` times, interleaved, and print runs/hour and the ratio."""
    quiet()  # Lightning's per-run banners, as the CLI silences them
    overrides = [*SAME_RECORD, f"trainer.max_epochs={epochs}", f"trainer.threads={threads}"]
    overrides.append(f"trainer.precision={precision}")  # both ways: bf16-mixed is Lightning's autocast
    if train_samples is not None:
        overrides.append(f"data.train_samples={train_samples}")
    seeds = list(range(n_seeds))
    seconds: dict[str, list[float]] = {"sequential": [], "population": []}
    with tempfile.TemporaryDirectory(prefix="dlsuite-bench-seeds-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        _timed("population", [*overrides, "trainer.max_epochs=1"], seeds[:2])  # store, data cache, imports
        names = list(seconds)
        for r in range(repeats):
            for mode in names[r % 2 :] + names[: r % 2]:
                seconds[mode].append(_timed(mode, overrides, seeds))
                print(f"  repeat {r}: {mode:>10} {seconds[mode][-1]:8.1f} s", flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"{n_seeds} seeds of mnist1d_cnn, {epochs} epochs, train_samples={train_samples or 'recipe'}, "
        f"threads={threads}, precision={precision}, torch {torch.__version__}, {os.cpu_count()} cores, "
        f"load average {load}, "
        f"{repeats} interleaved repeat(s)"
    )
    rate = {k: 3600 * n_seeds / statistics.median(v) for k, v in seconds.items()}
    print(f"{'mode':>10} {'s (median [min-max])':>26} {'runs/hour':>10}")
    for k, v in seconds.items():
        print(f"{k:>10} {statistics.median(v):>10.1f} [{min(v):.1f}-{max(v):.1f}]{'':>6} {rate[k]:>10,.0f}")
    print(f"population / sequential: {rate['population'] / rate['sequential']:.2f}x runs/hour")
