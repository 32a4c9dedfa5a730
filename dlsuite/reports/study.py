"""Study reports: the best trial (or Pareto front), a table of trials, per-variant statistics for compare
studies, and Optuna's plots as PNGs; written to a folder and attached to the study's MLflow parent run."""

from __future__ import annotations

import logging
import math
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dlsuite.errors import DlsuiteError
from dlsuite.hpo.runner import REASON_ATTR, RUN_ID_ATTR
from dlsuite.hpo.spec import StudySpec, is_test_metric
from dlsuite.hpo.storage import is_journal, open_storage, resolve_storage
from dlsuite.hpo.study import StudyResult
from dlsuite.hpo.trials import RETRIED, STATES, retried_numbers, state_counts
from dlsuite.paths import safe_segment
from dlsuite.reports.stats import describe_seeds
from dlsuite.tracking import record

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class Report:
    """A study's report: its text and the files written."""

    text: str
    out_dir: Path
    files: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def load(name: str, storage: str | None = None) -> optuna.Study:
    """Load study ``name`` or raise a DlsuiteError listing the studies in the storage."""
    url = resolve_storage(storage)
    if is_journal(url) and not Path(url).is_file():  # opening it would create it
        raise DlsuiteError(f"no study {name!r}: no study storage at {url} yet (run a study first, or pass --storage)")
    st = open_storage(url)
    names = optuna.study.get_all_study_names(st)
    if name not in names:
        raise DlsuiteError(f"no study {name!r} in {url}; studies there: {', '.join(sorted(names)) or '(none)'}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=st)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial (``study.trials_dataframe``): trial, state, one column per objective (named by
    the study's metrics), the parameters, seconds, the MLflow run and the failure reason."""
    import pandas as pd

    metrics = study.user_attrs.get(record.ATTR_METRICS) or [f"value{i}" for i in range(len(study.directions))]
    df = study.trials_dataframe(attrs=("number", "state", "values", "params", "duration", "user_attrs"))
    if df.empty:
        return pd.DataFrame(columns=["trial", "state", *metrics, "seconds", "mlflow_run", "reason"])
    values = [c for c in df.columns if c.startswith("values_")]  # values_0, values_1... in objective order
    params = sorted(c for c in df.columns if c.startswith("params_"))
    out = df[["number", "state", *values, *params]].rename(
        columns={"number": "trial", **dict(zip(values, metrics)), **{c: c.removeprefix("params_") for c in params}}
    )
    retried = retried_numbers(study.trials)  # crashed and run again: not a failure of its own
    out["state"] = [RETRIED if n in retried else st for n, st in zip(out["trial"], out["state"])]
    out["seconds"] = df["duration"].dt.total_seconds()
    out["mlflow_run"] = df.get(f"user_attrs_{RUN_ID_ATTR}")
    out["reason"] = df.get(f"user_attrs_{REASON_ATTR}")
    return out


def trial_rows(study: optuna.Study) -> tuple[list[str], list[list[str]]]:
    """Header and rows of :func:`trials_frame` as text (run ids cut to 12 characters, reasons to 60)."""
    df = trials_frame(study)
    cut = {"mlflow_run": 12, "reason": 60}
    rows = [
        [_fmt(v)[: cut[c]] if c in cut and _fmt(v) != "-" else _fmt(v) for c, v in zip(df.columns, r)]
        for r in df.astype(object).itertuples(index=False)
    ]
    return [str(c) for c in df.columns], rows


def variant_stats(study: optuna.Study) -> dict[str, dict[str, float]]:
    """``compare``: per variant, n / mean / std / min / max of the (first) objective over COMPLETE trials."""
    df = trials_frame(study)
    done = df[df["state"] == "COMPLETE"]
    if done.empty:
        return {}
    metric = df.columns[2]
    agg = done.groupby(done["variant"].astype(str), sort=False)[metric].agg(["count", "mean", "std", "min", "max"])
    return {
        str(v): {"n": float(r["count"]), **{k: float(r[k]) for k in ("mean", "std", "min", "max")}}
        for v, r in agg.iterrows()
    }


def render(study: optuna.Study) -> str:
    """The report's text."""
    kind = study.user_attrs.get(record.ATTR_TYPE, "search")
    metrics = study.user_attrs.get(record.ATTR_METRICS) or ["value"]
    counts = state_counts(study.trials)
    dirs = [d.name.lower() for d in study.directions]
    lines = [
        f"# Study {study.study_name} ({kind})",
        "",
        f"objectives: {', '.join(f'{m} ({d})' for m, d in zip(metrics, dirs))}",
        f"trials: {len(study.trials)} ({', '.join(f'{k} {counts[k]}' for k in STATES if k in counts)})",
        "",
    ]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if kind == "compare":
        stats = variant_stats(study)
        reverse = dirs[0] == "maximize"
        ordered = sorted(stats.items(), key=lambda kv: kv[1]["mean"], reverse=reverse)
        rows = [
            [v, str(int(s["n"])), _fmt(s["mean"]), _fmt(s["std"]), _fmt(s["min"]), _fmt(s["max"])] for v, s in ordered
        ]
        lines += [
            f"## {metrics[0]} per variant (mean over seeds, best first)",
            "",
            "```",
            _table(rows, ["variant", "n", "mean", "std", "min", "max"]),
            "```",
            "",
        ]
    elif complete and len(dirs) == 1:
        best = study.best_trial
        lines += [f"## Best trial: {best.number}", "", f"selected on {metrics[0]} = {_fmt(best.value)}", ""]
        lines += [f"- {k} = {_fmt(v)}" for k, v in best.params.items()]
        lines += [f"- MLflow run: {best.user_attrs.get('mlflow_run_id', '-')}", ""]
        lines += _held_out(study, [best], metrics)
    elif complete:
        lines += ["## Pareto front", ""]
        for t in study.best_trials:
            vals = ", ".join(f"{m}={_fmt(v)}" for m, v in zip(metrics, t.values))
            lines.append(f"- trial {t.number}: {vals}; {t.params}")
        lines.append("")
        lines += _held_out(study, study.best_trials, metrics)
    else:
        lines += ["No COMPLETE trial yet.", ""]
    header, rows = trial_rows(study)
    lines += ["## Trials", "", "```", _table(rows, header), "```", ""]
    return "\n".join(lines)


def _held_out(study: optuna.Study, trials: list[FrozenTrial], objectives: list[str]) -> list[str]:
    """The selected trials' validation and test numbers, the test ones apart: they were not selected on
    (unless the study says ``dlsuite.select_on_test``), so they estimate how the selection generalises."""
    from dlsuite.hpo.runner import SUMMARY_ATTR  # here: `study list` need not import Lightning

    on_test = [m for m in objectives if is_test_metric(m)]
    lines = ["## Selected trial(s): validation and test metrics", ""]
    if on_test:
        lines += [
            f"Selected on test data ({', '.join(on_test)}, select_on_test: true): the test numbers below are an "
            "optimistic estimate.",
            "",
        ]
    else:
        lines += ["Selected on validation data; the test set played no part in the selection.", ""]
    rows = []
    for t in trials:
        summary: dict[str, float] = t.user_attrs.get(SUMMARY_ATTR) or {}
        val = {k: v for k, v in summary.items() if not is_test_metric(k)}
        test = {k: v for k, v in summary.items() if is_test_metric(k)}
        rows.append([str(t.number), _kv(val), _kv(test)])
    lines += ["```", _table(rows, ["trial", "validation", "test (held out)"]), "```", ""]
    return lines


def _kv(d: dict[str, float]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in d.items()) or "-"


def _plots(study: optuna.Study, out: Path) -> tuple[list[Path], dict[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    metrics = study.user_attrs.get(record.ATTR_METRICS) or ["value"]
    files: list[Path] = []
    skipped: dict[str, str] = {}
    single = len(study.directions) == 1
    target = None if single else (lambda t: t.values[0])
    name0 = metrics[0]
    makers: dict[str, Any] = {
        "optimization_history": lambda: ovm.plot_optimization_history(study, target=target, target_name=name0),
        "param_importances": lambda: ovm.plot_param_importances(study, target=target, target_name=name0),
        "parallel_coordinate": lambda: ovm.plot_parallel_coordinate(study, target=target, target_name=name0),
        "slice": lambda: _readable_slice(ovm.plot_slice(study, target=target, target_name=name0)),
    }
    if not single:
        makers["pareto_front"] = lambda: ovm.plot_pareto_front(study, target_names=metrics)
    if study.user_attrs.get(record.ATTR_TYPE) == "compare":
        makers = {"variants": lambda: _variant_plot(study, name0)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, make in makers.items():
            try:
                ax = make()
                fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 5))
                path = out / f"{name}.png"
                fig.savefig(path, dpi=90, bbox_inches="tight")
                plt.close(fig)
                files.append(path)
            except Exception as exc:  # noqa: BLE001  too few trials for this plot, say so and go on
                skipped[name] = f"{type(exc).__name__}: {exc}"[:200]
                plt.close("all")
    return files, skipped


def _readable_slice(axes: Any) -> Any:
    """Optuna's slice plot with log-scaled axes given a few ticks that do not overlap (a log axis over
    a small range gets minor-tick labels, which collide), and the other labels turned when crowded."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for ax in getattr(axes, "flat", [axes]):
        if ax.get_xscale() == "log":
            # About four labels whatever the range (1e-03, 3e-03, ...): enough to read a value off, few
            # enough to fit. The subdivisions per decade depend on how many decades the axis spans.
            lo, hi = ax.get_xlim()
            decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
            subs: tuple[float, ...] = tuple(float(k) for k in range(1, 10))  # less than 0.6 of a decade
            for span, choice in ((4.0, (1.0,)), (1.5, (1.0, 3.0)), (0.6, (1.0, 2.0, 5.0))):
                if decades > span:
                    subs = choice
                    break
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0e}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        for label in ax.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
    return axes


def _variant_plot(study: optuna.Study, metric: str) -> Any:
    import matplotlib.pyplot as plt

    df = trials_frame(study)
    done = df[df["state"] == "COMPLETE"]
    if done.empty:
        raise ValueError("no COMPLETE trial")
    by = {str(v): g[df.columns[2]].tolist() for v, g in done.groupby(done["variant"].astype(str), sort=False)}
    # One row per variant (long names stay readable), best mean on top; seeds as dots, mean ± std in black.
    reverse = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    names = sorted(by, key=lambda n: statistics.fmean(by[n]), reverse=reverse)
    _fig, ax = plt.subplots(figsize=(8, max(3.0, 0.38 * len(names) + 1.5)))
    for i, n in enumerate(names):
        ax.scatter(by[n], [i] * len(by[n]), color="tab:blue", alpha=0.6, s=22, zorder=2)
        s = describe_seeds(by[n])  # the same 95% t-interval of the mean as the comparison report
        half = s.half_width if s.n > 1 else 0.0
        ax.errorbar([s.mean], [i], xerr=[half], fmt="D", color="black", ms=4, capsize=4, zorder=3)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlabel(metric)
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(
        f"{study.study_name}: {metric} per variant\n(dots: seeds; black: mean and its 95% interval; best first)"
    )
    return ax


def write_study_report(
    name: str,
    storage: str | None = None,
    out: str | Path | None = None,
    attach: bool = True,
    tracking_uri: str | None = None,
) -> Report:
    """Write ``report.md`` and the plots to ``out`` (default ``mlruns/reports/NAME``) and attach them
    to the study's MLflow parent run under ``report/``.

    A study name that is not a plain folder name is refused before anything is read or written
    (studies stored by older versions may have one): pass ``out`` to report such a study elsewhere.
    """
    out_dir = Path(out) if out else Path("mlruns") / "reports" / safe_segment(name, "study name")
    study = load(name, storage)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = render(study)
    files, skipped = _plots(study, out_dir)
    parent = study.user_attrs.get("mlflow_parent_run_id")
    if study.user_attrs.get(record.ATTR_TYPE) == "compare" and parent:
        # Compare studies get the statistical comparison (CIs, paired tests, curves over seeds),
        # built from the MLflow children and attached to the parent under comparison/.
        from dlsuite.reports.comparison import compare_report, format_table

        try:
            cmp, _ = compare_report(parent, uri=tracking_uri, out=out_dir / "comparison", log=attach)
            text += "\n## Comparison over seeds\n\n```\n" + format_table(cmp) + "```\n"
        except DlsuiteError as exc:
            skipped["comparison"] = str(exc)
    if skipped:
        text += "\nPlots skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()) + "\n"
    md = out_dir / "report.md"
    md.write_text(text)
    files.insert(0, md)
    if attach and parent:
        from dlsuite.tracking import store

        try:
            client = store.client(tracking_uri)
            for f in files:
                client.log_artifact(parent, str(f), "report")
            _log_parent_metrics(client, parent, study)
        except Exception as exc:  # noqa: BLE001  the report on disk still stands
            log.warning("could not attach the report to MLflow run %s: %s", parent, exc)
    return Report(text, out_dir, files, skipped)


def _log_parent_metrics(client: Any, parent: str, study: optuna.Study) -> None:
    import time

    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    ms = [
        Metric(f"trials_{s.lower()}", float(n), ts, 0)
        for s, n in state_counts(study.get_trials(deepcopy=False)).items()
    ]
    metrics = study.user_attrs.get(record.ATTR_METRICS) or ["value"]
    if len(study.directions) == 1 and any(t.state == TrialState.COMPLETE for t in study.trials):
        if study.user_attrs.get(record.ATTR_TYPE) != "compare":
            # the best trial's objective under its own name (best_val_acc, not best_best_val_acc)
            name = metrics[0] if metrics[0].startswith("best_") else f"best_{metrics[0]}"
            ms.append(Metric(name, float(study.best_value), ts, 0))
            client.set_tag(parent, "best_trial", str(study.best_trial.number))
    client.log_batch(parent, metrics=ms)


def list_studies(storage: str | None = None) -> list[dict[str, Any]]:
    """One row per study in the storage: name, type, trials by state (re-queued crashed trials as
    ``retried``, apart from ``FAIL``), best value."""
    url = resolve_storage(storage)
    if is_journal(url) and not Path(url).is_file():
        return []
    st = open_storage(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for name in sorted(optuna.study.get_all_study_names(st)):
        study = optuna.load_study(study_name=name, storage=st)
        counts = state_counts(study.get_trials(deepcopy=False))
        best: FrozenTrial | None = None
        if len(study.directions) == 1 and counts.get("COMPLETE"):
            best = study.best_trial
        rows.append(
            {
                "name": name,
                "type": study.user_attrs.get(record.ATTR_TYPE, "?"),
                "trials": len(study.trials),
                **{s: counts.get(s, 0) for s in STATES},
                "best": best.value if best is not None else None,
            }
        )
    return rows


def report_study(spec: StudySpec, result: StudyResult) -> Report:
    """The report of a study that has just run (``dlsuite study run`` writes it at the end)."""
    base = spec.run_config()
    attach = result.parent_run_id is not None
    return write_study_report(spec.name, result.storage, attach=attach, tracking_uri=base.tracking.uri)
