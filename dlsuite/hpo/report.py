"""Study reports: the best trial (or Pareto front), a table of trials, per-variant statistics for compare
studies, and Optuna's plots as PNGs; written to a folder and attached to the study's MLflow parent run."""

from __future__ import annotations

import logging
import math
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dlsuite.compare.stats import summarize
from dlsuite.errors import DlsuiteError
from dlsuite.hpo.storage import open_storage, resolve_storage

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
    st = open_storage(url)
    names = optuna.study.get_all_study_names(st)
    if name not in names:
        raise DlsuiteError(f"no study {name!r} in {url}; studies there: {', '.join(sorted(names)) or '(none)'}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=st)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def trial_rows(study: optuna.Study) -> tuple[list[str], list[list[str]]]:
    """Header and rows: number, state, values, params, seconds, MLflow run, reason."""
    metrics = study.user_attrs.get("dlsuite.metrics") or [f"value{i}" for i in range(len(study.directions))]
    keys = sorted({k for t in study.trials for k in t.params})
    rows = []
    for t in study.trials:
        vals = t.values or [None] * len(metrics)
        secs = t.duration.total_seconds() if t.duration else None
        rows.append(
            [
                str(t.number),
                t.state.name,
                *(_fmt(v) if v is not None else "-" for v in vals),
                *(_fmt(t.params[k]) if k in t.params else "-" for k in keys),
                _fmt(secs) if secs is not None else "-",
                str(t.user_attrs.get("mlflow_run_id", "-"))[:12],
                str(t.user_attrs.get("fail_reason", ""))[:60],
            ]
        )
    return ["trial", "state", *metrics, *keys, "seconds", "mlflow_run", "reason"], rows


def variant_stats(study: optuna.Study) -> dict[str, dict[str, float]]:
    """``compare``: per variant, n / mean / std / min / max of the metric over COMPLETE trials."""
    by: dict[str, list[float]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        by.setdefault(str(t.params.get("variant")), []).append(float(t.values[0]))
    out = {}
    for v, xs in by.items():
        out[v] = {
            "n": float(len(xs)),
            "mean": statistics.fmean(xs),
            "std": statistics.stdev(xs) if len(xs) > 1 else math.nan,
            "min": min(xs),
            "max": max(xs),
        }
    return out


def render(study: optuna.Study) -> str:
    """The report's text."""
    kind = study.user_attrs.get("dlsuite.type", "search")
    metrics = study.user_attrs.get("dlsuite.metrics") or ["value"]
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    dirs = [d.name.lower() for d in study.directions]
    lines = [
        f"# Study {study.study_name} ({kind})",
        "",
        f"objectives: {', '.join(f'{m} ({d})' for m, d in zip(metrics, dirs))}",
        f"trials: {len(study.trials)} ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})",
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
        lines += [f"## Best trial: {best.number}", "", f"{metrics[0]} = {_fmt(best.value)}", ""]
        lines += [f"- {k} = {_fmt(v)}" for k, v in best.params.items()]
        lines += [f"- MLflow run: {best.user_attrs.get('mlflow_run_id', '-')}", ""]
    elif complete:
        lines += ["## Pareto front", ""]
        for t in study.best_trials:
            vals = ", ".join(f"{m}={_fmt(v)}" for m, v in zip(metrics, t.values))
            lines.append(f"- trial {t.number}: {vals}; {t.params}")
        lines.append("")
    else:
        lines += ["No COMPLETE trial yet.", ""]
    header, rows = trial_rows(study)
    lines += ["## Trials", "", "```", _table(rows, header), "```", ""]
    return "\n".join(lines)


def _plots(study: optuna.Study, out: Path) -> tuple[list[Path], dict[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    metrics = study.user_attrs.get("dlsuite.metrics") or ["value"]
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
    if study.user_attrs.get("dlsuite.type") == "compare":
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

    by: dict[str, list[float]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        by.setdefault(str(t.params.get("variant")), []).append(float(t.values[0]))
    if not by:
        raise ValueError("no COMPLETE trial")
    _fig, ax = plt.subplots(figsize=(8, 5))
    names = list(by)
    for i, n in enumerate(names):
        ax.scatter([i] * len(by[n]), by[n], alpha=0.6)
        s = summarize(by[n])  # the same 95% t-interval of the mean as the comparison report
        half = s.half_width if s.n > 1 else 0.0
        ax.errorbar([i], [s.mean], yerr=[half], fmt="k_", capsize=8, markersize=14)
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylabel(metric)
    ax.set_title(f"{study.study_name}: {metric} per variant\n(points: seeds; black: mean and its 95% interval)")
    return ax


def write_report(
    name: str,
    storage: str | None = None,
    out: str | Path | None = None,
    attach: bool = True,
    tracking_uri: str | None = None,
) -> Report:
    """Write ``report.md`` and the plots to ``out`` (default ``mlruns/reports/NAME``) and attach them
    to the study's MLflow parent run under ``report/``."""
    study = load(name, storage)
    out_dir = Path(out) if out else Path("mlruns") / "reports" / name
    out_dir.mkdir(parents=True, exist_ok=True)
    text = render(study)
    files, skipped = _plots(study, out_dir)
    parent = study.user_attrs.get("mlflow_parent_run_id")
    if study.user_attrs.get("dlsuite.type") == "compare" and parent:
        # Compare studies get the statistical comparison (CIs, paired tests, curves over seeds),
        # built from the MLflow children and attached to the parent under comparison/.
        from dlsuite.compare.report import compare_report, format_table

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
    ms = [Metric(f"trials_{s.name.lower()}", float(n), ts, 0) for s, n in _state_counts(study).items()]
    metrics = study.user_attrs.get("dlsuite.metrics") or ["value"]
    if len(study.directions) == 1 and any(t.state == TrialState.COMPLETE for t in study.trials):
        if study.user_attrs.get("dlsuite.type") != "compare":
            ms.append(Metric(f"best_{metrics[0]}", float(study.best_value), ts, 0))
            client.set_tag(parent, "best_trial", str(study.best_trial.number))
    client.log_batch(parent, metrics=ms)


def _state_counts(study: optuna.Study) -> dict[TrialState, int]:
    out: dict[TrialState, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state] = out.get(t.state, 0) + 1
    return out


def list_studies(storage: str | None = None) -> list[dict[str, Any]]:
    """One row per study in the storage: name, type, trials by state, best value."""
    url = resolve_storage(storage)
    if "://" not in url and not Path(url).is_file():
        return []
    st = open_storage(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for name in sorted(optuna.study.get_all_study_names(st)):
        study = optuna.load_study(study_name=name, storage=st)
        counts = {s.name: n for s, n in _state_counts(study).items()}
        best: FrozenTrial | None = None
        if len(study.directions) == 1 and counts.get("COMPLETE"):
            best = study.best_trial
        rows.append(
            {
                "name": name,
                "type": study.user_attrs.get("dlsuite.type", "?"),
                "trials": len(study.trials),
                **{s: counts.get(s, 0) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")},
                "best": best.value if best is not None else None,
            }
        )
    return rows
