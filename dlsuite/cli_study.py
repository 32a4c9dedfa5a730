"""``dlsuite study run|report|list``: thin commands over :mod:`dlsuite.hpo`."""

from __future__ import annotations

import argparse

from dlsuite.errors import ConfigError


def _gpus(text: str | None) -> list[str] | None:
    if text is None:
        return None
    ids = [g.strip() for g in text.split(",") if g.strip()]
    if not ids or not all(g.isdigit() for g in ids):
        raise ConfigError(f"--gpus takes a comma-separated list of GPU ids, e.g. 0,1 (got {text!r})")
    return ids


def precheck_study_run(args: argparse.Namespace) -> None:
    """Load and validate the study, then check that its study storage and tracking store answer.

    Runs before anything opens a store (see ``dlsuite.cli.main``): an unreachable PostgreSQL or
    tracking server is one line and exit 2, with no study, run or file written.
    """
    from dlsuite.hpo.spec import load_study_spec
    from dlsuite.hpo.storage import check_storage, resolve_storage
    from dlsuite.tracking.store import check_uri

    sets = list(args.set)
    if args.tracking_uri:
        sets.append(f"tracking.uri={args.tracking_uri}")  # last, so it wins over the study file's
    spec = load_study_spec(args.file, sets)  # refuses a bad study before anything is written
    if args.storage:
        spec = spec.model_copy(update={"storage": args.storage})
    if args.workers < 1:
        raise ConfigError("--workers must be >= 1")
    if args.population is not None:
        if args.population < 1:
            raise ConfigError(
                f"--population must be a whole number >= 1 (trials trained at once; 1: one by one), "
                f"got {args.population}"
            )
        spec = spec.model_copy(update={"population": args.population})
    _gpus(args.gpus)
    check_storage(resolve_storage(spec.storage))
    base = spec.run_config()
    if base.tracking.enabled:
        check_uri(base.tracking.uri)
        args.uri = base.tracking.uri  # the store the reaper looks at is the study's
    args.spec = spec


def cmd_study_run(args: argparse.Namespace) -> int:
    """Run a study file to its budget; running it again resumes the same study.

    Several hosts run one study by sharing a PostgreSQL --storage and a tracking server
    --tracking-uri: each runs this same command (see docs/studies.md, "Several hosts").
    """
    spec = args.spec if getattr(args, "spec", None) is not None else None
    if spec is None:
        precheck_study_run(args)
        spec = args.spec
    gpus = _gpus(args.gpus)
    if args.check:
        from dlsuite.hpo.grouping import check_lines

        print(f"study {spec.name}: valid ({spec.type}, {len(spec.space or spec.variants)} keys/variants)")
        print("\n".join(check_lines(spec)))
        return 0
    from dlsuite.hpo.storage import redact
    from dlsuite.hpo.study import run_study
    from dlsuite.reports.study import report_study

    result = run_study(spec, workers=args.workers, gpus=gpus)
    print(f"study {result.name}: {result.counts} (storage {redact(result.storage)})")
    rep = report_study(spec, result)
    print(f"report: {rep.out_dir}/report.md; MLflow parent run {result.parent_run_id}")
    if result.view:
        print(f"trials with their metric and values in the MLflow UI: dlsuite ui, then open /{result.view}")
    return 0


def cmd_study_report(args: argparse.Namespace) -> int:
    """Print a study's best trial and table; write the plots; attach them to its MLflow parent run."""
    from dlsuite.reports.study import write_study_report

    rep = write_study_report(args.name, args.storage, args.out, attach=not args.no_attach)
    print(rep.text)
    print(f"written: {', '.join(str(f) for f in rep.files)}")
    return 0


def cmd_study_list(args: argparse.Namespace) -> int:
    """List the studies in the storage with their trial counts by state.

    "retried" counts trials whose worker died or was interrupted and whose parameters were run again
    (FAIL in Optuna); "FAIL" counts only trials that failed on their own.
    """
    from dlsuite.hpo.trials import STATES
    from dlsuite.reports.study import _table, list_studies

    rows = list_studies(args.storage)
    if not rows:
        print("no studies yet")
        return 0
    header = ["name", "type", "trials", *STATES, "best"]
    cells = [[str(r[h]) if h != "best" or r[h] is None else f"{r[h]:.4g}" for h in header] for r in rows]
    print(_table(cells, header))
    return 0


def add_study(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``dlsuite study`` and its subcommands."""
    p = sub.add_parser(
        "study",
        help="run, report and list Optuna studies",
        description="Optuna studies from a study file: hyperparameter searches (type: search) and comparisons "
        "of variants over seeds (type: compare), one MLflow parent run per study with a child run per "
        "trial. See docs/studies.md.",
    )
    ss = p.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    storage_help = (
        "Optuna storage: journal file or RDB URL (default $DLSUITE_STUDY_STORAGE or mlruns/optuna/journal.log)"
    )

    r = ss.add_parser("run", help="run or resume a study file", description=cmd_study_run.__doc__)
    r.add_argument("file", help="study YAML (see studies/ and docs/studies.md)")
    r.add_argument("--workers", type=int, default=1, help="worker processes sharing the storage (default 1)")
    r.add_argument(
        "--population",
        type=int,
        metavar="P",
        help="ask up to P trials at once and train those that share their structure as one vectorised population "
        "(default: the study file's 'population', else 1: one trial at a time); see docs/studies.md",
    )
    r.add_argument("--gpus", help="GPU ids the workers are pinned to round-robin, e.g. 0,1 (default: all visible)")
    r.add_argument(
        "--set",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="study keys (n_trials=3, sampler.name=random) or run config keys (trainer.max_epochs=2, run.seed=1)",
    )
    r.add_argument(
        "--storage",
        help="Optuna storage: a journal file (one host) or postgresql+psycopg://user@host:5432/db (several hosts); "
        "default: the study file's storage, $DLSUITE_STUDY_STORAGE or mlruns/optuna/journal.log",
    )
    r.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI, e.g. http://host:5000 (a tracking server, for several hosts); "
        "default: the study file's tracking.uri, $MLFLOW_TRACKING_URI or ./mlruns/mlflow.db",
    )
    r.add_argument("--check", action="store_true", help="validate the study file (and that its stores answer) and exit")
    r.set_defaults(func=cmd_study_run, opens_store=True, precheck=precheck_study_run)

    rep = ss.add_parser("report", help="print and write a study's report", description=cmd_study_report.__doc__)
    rep.add_argument("name", help="study name")
    rep.add_argument("--storage", help=storage_help)
    rep.add_argument("--out", help="folder for report.md and the PNGs (default mlruns/reports/NAME)")
    rep.add_argument("--no-attach", action="store_true", help="do not attach the report to the MLflow parent run")
    rep.set_defaults(func=cmd_study_report, opens_store=True)

    ls = ss.add_parser("list", help="list studies with trial counts by state", description=cmd_study_list.__doc__)
    ls.add_argument("--storage", help=storage_help)
    ls.set_defaults(func=cmd_study_list, opens_store=True)
