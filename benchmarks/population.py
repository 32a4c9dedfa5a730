"""Model-steps per second of a population against a hand-written loop of one model, on this machine.

The MNIST-1D paper's CNN recipe (``mnist1d_cnn``, or ``--model``; Adam 1e-2, batch 100): the hand-written loop is one
model with ``torch.optim.Adam`` over device-resident tensors (forward, ``cross_entropy``, ``zero_grad``,
``backward``, ``step``); a population of P members takes the same step for all of them at once
(``dlsuite.population.train.train_step``: vmapped forward, one backward, the vectorised Adam), each
member on its own batch. Modes are interleaved within each repeat (the order rotates) so the slow
phases of a shared machine hit them alike; each measurement runs for ``--seconds`` after 3 warm-up
steps. Reported: median model-steps/s [min-max] and the ratio to the hand-written loop.

Usage: ``python -m benchmarks.population [--model mnist1d_cnn] [--sizes 1,4,16,64] [--repeats 3]``
``[--seconds 1.5] [--threads 1] [--vmap]`` (``--vmap``: each size also with its forward under ``vmap``
instead of the grouped operators, :mod:`dlsuite.population.grouped`).
``--seeds32``: instead, runs/hour of a 32-seed training, one run per seed vs one population
(``benchmarks/population_seeds.py``; ``--n-seeds``, ``--epochs``, ``--train-samples``, ``--repeats``).
It reports; it never fails on speed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from dlsuite.config import RunConfig, load_config
from dlsuite.data import create_datamodule
from dlsuite.models import apply_init, create_model
from dlsuite.population.train import build_population, train_step

RECIPE = ["optim.name=adam", "optim.lr=0.01", "data.batch_size=100"]
MODEL = ["model.name=mnist1d_cnn"]  # --model replaces it


def _config(seed: int) -> RunConfig:
    return load_config(None, [*MODEL, *RECIPE, f"seed={seed}"])


def _timed(step: Callable[[], None], seconds: float, device: torch.device) -> float:
    """Steps per second of ``step`` over about ``seconds``, after 3 warm-up steps."""
    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - start)


def hand(x: torch.Tensor, y: torch.Tensor, bs: int, device: torch.device) -> Callable[[], None]:
    """The hand-written loop's step, one model."""
    cfg = _config(0)
    torch.manual_seed(0)
    model = create_model(cfg.model.name, tuple(x.shape[1:]), 10, **cfg.model.knobs)
    apply_init(model, cfg.model.init, cfg.model.init_std)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)

    def step() -> None:
        idx = torch.randint(len(x), (bs,), device=device)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def population(
    x: torch.Tensor, y: torch.Tensor, bs: int, size: int, device: torch.device, grouped: bool = True
) -> Callable[[], None]:
    """The population's step for ``size`` members, each on its own batch (``grouped=False``: under vmap)."""
    pop = build_population([_config(s) for s in range(size)], tuple(x.shape[1:]), 10, device, grouped)

    def step() -> None:
        idx = torch.randint(len(x), (size, bs), device=device)
        train_step(pop, x[idx], y[idx])

    return step


def main(argv: Sequence[str] | None = None) -> None:
    """Measure and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,4,16,64")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=1.5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="mnist1d_cnn", help="a population model (mnist1d_cnn, mnist1d_mlp, ...)")
    p.add_argument("--vmap", action="store_true", help="also each size with the forward under vmap (not grouped)")
    p.add_argument("--seeds32", action="store_true", help="runs/hour of N seeds: one run each vs one population")
    p.add_argument("--n-seeds", type=int, default=32)
    p.add_argument("--epochs", type=int, default=20, help="--seeds32: epochs per run (the recipe trains 200)")
    p.add_argument("--train-samples", type=int, default=None, help="--seeds32: fewer training examples")
    p.add_argument("--precision", default="32-true", help="--seeds32: trainer.precision of both ways")
    args = p.parse_args(argv)
    if args.seeds32:
        from benchmarks.population_seeds import run

        threads = "auto" if args.threads <= 0 else str(args.threads)
        return run(args.n_seeds, args.epochs, args.train_samples, args.repeats, threads, args.precision)
    MODEL[:] = [f"model.name={args.model}"]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dm = create_datamodule(_config(0).data, 0)
    dm.prepare()
    x, y = (t.to(device) for t in dm.splits["train"])
    bs = _config(0).data.batch_size
    sizes = [int(s) for s in args.sizes.split(",")]
    steps = {"hand": hand(x, y, bs, device), **{f"P={n}": population(x, y, bs, n, device) for n in sizes}}
    members = {"hand": 1, **{f"P={n}": n for n in sizes}}
    if args.vmap:
        steps |= {f"P={n} vmap": population(x, y, bs, n, device, grouped=False) for n in sizes}
        members |= {f"P={n} vmap": n for n in sizes}
    rates: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    for r in range(args.repeats):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            rates[k].append(_timed(steps[k], args.seconds, device) * members[k])
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"{args.model}, Adam, batch {bs}, {args.device}, torch {torch.__version__}, {args.threads} thread(s), "
        f"{os.cpu_count()} cores, load average {load}, {args.repeats} interleaved repeats"
    )
    print(f"{'mode':>11} {'model-steps/s (median [min-max])':>34} {'x hand':>8}")
    base = statistics.median(rates["hand"])
    for k in names:
        v = rates[k]
        med = statistics.median(v)
        print(f"{k:>11} {med:>14,.0f} [{min(v):,.0f}-{max(v):,.0f}]{'':>4} {med / base:>8.2f}")


if __name__ == "__main__":
    main()
