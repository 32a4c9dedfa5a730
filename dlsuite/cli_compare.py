"""``dlsuite compare report`` and ``dlsuite doctor``: thin CLI wrappers over :mod:`dlsuite.reports`."""

from __future__ import annotations

import argparse
import sys


def cmd_compare_report(args: argparse.Namespace) -> int:
    """Print the comparison table of a compare study and attach it, with plots, to its parent run."""
    from dlsuite.reports.comparison import compare_report, format_table

    maximize = None if args.direction is None else args.direction == "maximize"
    cmp, paths = compare_report(
        args.ref,
        uri=args.uri,
        baseline=args.baseline,
        metric=args.metric,
        maximize=maximize,
        out=args.out,
        log=not args.no_log,
    )
    print(format_table(cmp), end="")
    if paths:
        print(f"written: {', '.join(str(p) for p in paths)}")
    if not args.no_log:
        print(f"attached to parent run {cmp.parent_run_id} under comparison/")
    return 0


def add_compare(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``dlsuite compare report REF``."""
    p = sub.add_parser(
        "compare",
        help="statistical comparison of a compare study's variants over seeds",
        description="Compare the variants of a finished compare study (dlsuite study run with type: compare): "
        "mean and 95%% interval over seeds, paired tests against a baseline with Holm-adjusted p-values, "
        "a rank, learning-curve and gap plots.",
    )
    actions = p.add_subparsers(dest="compare_command", required=True, metavar="ACTION")
    r = actions.add_parser("report", help="table and plots of a compare study", description=cmd_compare_report.__doc__)
    r.add_argument("ref", metavar="PARENT_RUN_ID_OR_STUDY_NAME", help="the study's parent run id, or its name")
    r.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI or ./mlruns/mlflow.db)")
    r.add_argument("--baseline", help="variant the others are tested against (default: baseline/none/the first)")
    r.add_argument("--metric", help="summary metric compared (default: the study's metric, else test_acc)")
    r.add_argument("--direction", choices=["maximize", "minimize"], help="whether larger or smaller is better")
    r.add_argument("--out", help="also write the table (txt, md, csv, json) and PNGs into this folder")
    r.add_argument("--no-log", action="store_true", help="do not attach the report to the parent run")
    r.set_defaults(func=cmd_compare_report, opens_store=True)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Diagnose a finished run (over- or underfitting, and why) and write a compare study of remedies."""
    from dlsuite.reports.doctor import diagnose_run, format_diagnosis, remedy_cost, write_remedy_study

    diagnosis = diagnose_run(args.run_id, uri=args.uri)
    print(format_diagnosis(diagnosis), end="")
    if not diagnosis.variants:
        print("no remedy study written: nothing to remedy")
        return 0
    path = write_remedy_study(diagnosis, args.out, seeds=args.seeds)
    print(f"remedy study written: {path}", file=sys.stdout)
    print(f"it costs {remedy_cost(diagnosis, args.seeds)}")
    print(f"run it with: dlsuite study run {path}")
    return 0


def add_doctor(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``dlsuite doctor RUN_ID``."""
    p = sub.add_parser(
        "doctor", help="diagnose over/underfitting of a run and propose remedies", description=cmd_doctor.__doc__
    )
    p.add_argument("run_id", help="MLflow run id of a finished run")
    p.add_argument("--uri", help="tracking URI (default: $MLFLOW_TRACKING_URI or ./mlruns/mlflow.db)")
    p.add_argument(
        "--out",
        help="path of the study YAML to write (default: mlruns/reports/doctor_<run id prefix>/, where its report goes)",
    )
    p.add_argument("--seeds", type=int, default=5, help="seeds per variant in the written study (default 5)")
    p.set_defaults(func=cmd_doctor, opens_store=True)
