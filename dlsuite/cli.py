"""The ``dlsuite`` command: thin subcommands that parse arguments and call plain functions.

Errors the user can fix (:class:`~dlsuite.errors.DlsuiteError`) print one line and exit 2, with
nothing written. A run stopped by Ctrl-C / SIGTERM exits 130 / 143 after ending its MLflow run KILLED.
Each subcommand is an ``add_*`` function below, registered in ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Sequence

from dlsuite.cli_compare import add_compare, add_doctor
from dlsuite.cli_study import add_study
from dlsuite.cli_ui import add_ui
from dlsuite.errors import DlsuiteError

EXIT_USAGE = 2
EXIT_DIVERGED = 3


def _quiet() -> None:
    # Lightning's start-up chatter and hints about DataLoader workers do not apply to the
    # in-memory path; keep warnings that matter.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Restoring the finders' own temporary checkpoints (and the best one before testing) says that
    # weights_only defaulted to False: an internal detail. The batch-size finder's "will continue with
    # full run" is wrong here: `find-batch-size` stops after the search.
    logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.tuner.batch_size_scaling").setLevel(logging.WARNING)
    for msg in (
        ".*does not have many workers.*",
        ".*LeafSpec.*",
        ".*smaller than the logging interval.*",
        ".*treespec.*",
        ".*Checkpoint directory.*exists.*",
    ):
        warnings.filterwarnings("ignore", message=msg)


# -- train ------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    """Train one run from a YAML config plus overrides."""
    from dlsuite.config import load_config

    cfg = load_config(args.config, args.set)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    from dlsuite.train.run import TrainingDiverged, is_rank_zero, train

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
    p.set_defaults(func=cmd_train)


# -- list -------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    """Print the registered names of one kind, one per line (or the kinds, without KIND)."""
    from dlsuite.registry import REGISTRIES, get_registry

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
    p.set_defaults(func=cmd_list)


from dlsuite.cli_tune import add_find_batch_size, add_find_lr  # noqa: E402

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_train, add_list, add_ui, add_study]  # type: ignore[type-arg]
SUBCOMMANDS += [add_find_lr, add_find_batch_size, add_compare, add_doctor]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="dlsuite", description="PyTorch Lightning experiment suite with MLflow tracking and Optuna studies."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = build_parser().parse_args(argv)
    _quiet()
    try:
        return int(args.func(args))
    except DlsuiteError as exc:
        print(f"dlsuite: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"dlsuite: interrupted ({exc or 'SIGINT'})", file=sys.stderr)
        return 143 if "SIGTERM" in str(exc) else 130


if __name__ == "__main__":
    raise SystemExit(main())
