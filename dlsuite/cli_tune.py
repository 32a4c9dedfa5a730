"""``dlsuite find-lr`` and ``dlsuite find-batch-size``: Lightning's finders on a run config.

They were called ``tune-lr`` and ``tune-batch-size``; "tune" is what studies do. The old names still
work, hidden from the help, and say once that they were renamed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

RENAMED = {"tune-lr": "find-lr", "tune-batch-size": "find-batch-size"}


def _renamed(old: str, func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(f"dlsuite: {old} was renamed to {RENAMED[old]}", file=sys.stderr)
        return func(args)

    return run


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="run config YAML (see configs/)")
    p.add_argument("--set", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help="override config values")


def cmd_find_lr(args: argparse.Namespace) -> int:
    """Run the learning-rate range test; log the curve (plot) and the suggestion (param) to MLflow."""
    from dlsuite.build import load_run_config
    from dlsuite.runner.finders import tune_lr

    cfg = load_run_config(args.config, args.set)
    result = tune_lr(cfg, min_lr=args.min_lr, max_lr=args.max_lr, num_training=args.num_training)
    print(f"suggested learning rate: {result.suggestion} (run {result.run_id or '(untracked)'})")
    print(f"use it with: --set optim.lr={result.suggestion:.3g}" if result.suggestion else "no suggestion")
    return 0


def add_find_lr(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``dlsuite find-lr`` (and its old name ``tune-lr``, hidden)."""
    for name in ("find-lr", "tune-lr"):
        kw: dict[str, Any] = {"help": "learning-rate finder (range test)"} if name == "find-lr" else {}
        p = sub.add_parser(name, description=cmd_find_lr.__doc__, **kw)
        _config_args(p)
        p.add_argument("--min-lr", type=float, default=1e-6, help="start of the range (default 1e-6)")
        p.add_argument("--max-lr", type=float, default=1.0, help="end of the range (default 1)")
        p.add_argument("--num-training", type=int, default=100, help="training steps in the test (default 100)")
        p.set_defaults(func=cmd_find_lr if name == "find-lr" else _renamed(name, cmd_find_lr), opens_store=True)


def cmd_find_batch_size(args: argparse.Namespace) -> int:
    """Find the largest batch size that fits (doubling until out of memory); log throughput per size to MLflow."""
    from dlsuite.build import load_run_config
    from dlsuite.runner.finders import tune_batch_size

    cfg = load_run_config(args.config, args.set)
    result = tune_batch_size(
        cfg, init_val=args.init, max_trials=args.max_trials, steps_per_trial=args.steps, mode=args.mode
    )
    for b, r in zip(result.curve["batch_size"], result.curve["samples_per_s"]):
        print(f"batch {int(b):6d}: {r:10.0f} samples/s")
    print(f"suggested batch size: {result.suggestion} (run {result.run_id or '(untracked)'})")
    return 0


def add_find_batch_size(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``dlsuite find-batch-size`` (and its old name ``tune-batch-size``, hidden)."""
    for name in ("find-batch-size", "tune-batch-size"):
        kw: dict[str, Any] = (
            {"help": "batch-size finder (largest that fits, throughput per size)"} if name == "find-batch-size" else {}
        )
        p = sub.add_parser(name, description=cmd_find_batch_size.__doc__, **kw)
        _config_args(p)
        p.add_argument("--init", type=int, default=16, help="first batch size tried (default 16)")
        p.add_argument("--max-trials", type=int, default=8, help="doublings at most (default 8)")
        p.add_argument("--steps", type=int, default=5, help="training steps per size (default 5)")
        p.add_argument("--mode", choices=["power", "binsearch"], default="power", help="search mode (default power)")
        finder = cmd_find_batch_size if name == "find-batch-size" else _renamed(name, cmd_find_batch_size)
        p.set_defaults(func=finder, opens_store=True)
