"""The ``dlsuite`` command: thin subcommands that parse arguments and call plain functions.

Errors the user can fix (:class:`~dlsuite.errors.DlsuiteError`) print one line and exit 2, with
nothing written. A run stopped by Ctrl-C / SIGTERM exits 130 / 143 after ending its MLflow run KILLED.
Each subcommand is an ``add_*`` function below, registered in ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from dlsuite.cli_compare import add_compare, add_doctor
from dlsuite.cli_server import add_server
from dlsuite.cli_study import add_study
from dlsuite.cli_ui import add_ui
from dlsuite.errors import ConfigError, DlsuiteError
from dlsuite.runner.quiet import quiet

if TYPE_CHECKING:
    from dlsuite.config import RunConfig

EXIT_USAGE = 2
EXIT_DIVERGED = 3


# -- train ------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    """Train one run from a YAML config plus overrides (or one per seed with --seeds)."""
    from dlsuite.build import load_run_config

    seeds = None
    if args.seeds is not None:
        from dlsuite.runner.seeds import parse_seeds

        seeds = parse_seeds(args.seeds)
        if any(o.partition("=")[0].strip() == "seed" for o in args.set):
            raise ConfigError("--seeds sets each run's seed: drop --set seed=... (or drop --seeds)")
    cfg = load_run_config(args.config, args.set)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    if seeds is not None:
        return _train_seeds(cfg, seeds, args.set)
    from dlsuite.runner.run import TrainingDiverged, is_rank_zero, train

    try:
        result = train(cfg, overrides=args.set)
    except TrainingDiverged as exc:
        print(f"dlsuite: run FAILED: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    if is_rank_zero():
        keys = ("test_", "best_", "cv_", "ensemble_")
        shown = {k: round(v, 4) for k, v in result.metrics.items() if k.startswith(keys)}
        print(f"run {result.run_id or '(untracked)'} {result.status}: {shown}")
        if result.run_id:
            print("compare runs in the MLflow UI: dlsuite ui")
    return 0


def _train_seeds(cfg: RunConfig, seeds: list[int], overrides: list[str]) -> int:
    """``train --seeds``: one population (or one run per seed, saying why), then the table over seeds."""
    from dlsuite.runner.seeds import format_table, seeds_reason, train_seeds

    reason = seeds_reason(cfg)
    if reason is not None:
        print(f"dlsuite: training the {len(seeds)} seeds one after another: {reason}", file=sys.stderr)
    result = train_seeds(cfg, seeds, overrides)
    print(format_table(result))
    print(f"run {result.parent_run_id or '(untracked)'} {result.status} (parent of {len(seeds)} seed runs)")
    if result.parent_run_id:
        print("compare runs in the MLflow UI: dlsuite ui")
    return EXIT_DIVERGED if result.failed else 0


def add_train(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="train one run", description=cmd_train.__doc__)
    p.add_argument("config", help="run config YAML (see configs/)")
    p.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override config values by dotted key, e.g. --set optim.lr=1e-3 data.batch_size=64",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "--seeds",
        metavar="SEEDS",
        help="train once per seed (0-9 both ends included, 0,3,7 or 0-4,10; at least two), as one population "
        "when the config allows it, and print each final metric's mean and 95%% interval; MLflow: one parent "
        "run, one child run per seed",
    )
    p.set_defaults(func=cmd_train, opens_store=True)


# -- list -------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    """Print the registered names of one kind, one per line (or the kinds, without KIND)."""
    from dlsuite.catalog import get_registry
    from dlsuite.registry import REGISTRIES

    if args.kind is None:
        get_registry("models")  # fills every registry
        for kind, reg in REGISTRIES.items():
            print(f"{kind:22s} {reg.help}")
        return 0
    for name in get_registry(args.kind).names(args.pattern):
        print(name)
    return 0


def add_list(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("list", help="list registered names of a kind", description=cmd_list.__doc__)
    p.add_argument("kind", nargs="?", help="models, datasets, optimizers, schedulers, losses, inits, ...")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'res*'")
    p.set_defaults(func=cmd_list, opens_store=True)  # reaps (cheaply) like every command: kill -9 leaves runs


from dlsuite.cli_tune import add_find_batch_size, add_find_lr  # noqa: E402

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_train, add_list, add_ui, add_study]  # type: ignore[type-arg]
SUBCOMMANDS += [add_find_lr, add_find_batch_size, add_compare, add_doctor, add_server]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="dlsuite", description="PyTorch Lightning experiment suite with MLflow tracking and Optuna studies."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def reap_for(args: argparse.Namespace) -> list[str]:
    """Before a command that opens the MLflow store (``set_defaults(opens_store=True)``), end the runs
    that a killed process left RUNNING there; an absent store is not created. Returns their ids."""
    if not getattr(args, "opens_store", False):
        return []
    from dlsuite.tracking.runs import reap_store

    return reap_store(getattr(args, "uri", None))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = build_parser().parse_args(argv)
    quiet()
    try:
        precheck = getattr(args, "precheck", None)
        if precheck is not None:  # e.g. servers reachable, before the reaper opens the store
            precheck(args)
        args.reaped = reap_for(args)
        if args.reaped and not getattr(args, "tells_reaped", False):
            from dlsuite.tracking.runs import reaped_note

            print(f"dlsuite: {reaped_note(args.reaped)}", file=sys.stderr)
        return int(args.func(args))
    except DlsuiteError as exc:
        print(f"dlsuite: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"dlsuite: interrupted ({exc or 'SIGINT'})", file=sys.stderr)
        return 143 if "SIGTERM" in str(exc) else 130


if __name__ == "__main__":
    raise SystemExit(main())
