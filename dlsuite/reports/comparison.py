"""The comparison report of a compare study, built from the MLflow record alone.

A compare study trains every variant with the same seeds, each (variant, seed) one child run of the
study's parent run, tagged ``dlsuite.variant`` and ``dlsuite.seed``. This module reads those children
back and turns them into the result the study exists for: per variant the mean and 95% confidence
interval (over seeds) of the study metric, of the best validation accuracy, of the final
train-validation gap and of the epoch of best validation; the difference to the baseline with a paired
test over seeds (raw and Holm-adjusted p-values); a rank; learning curves and gap plots. The table is
printed, written as text / CSV / Markdown / JSON, and attached with the plots to the parent run.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlsuite.errors import DlsuiteError
from dlsuite.reports.plots import plot_effects, plot_gaps, plot_learning_curves
from dlsuite.reports.stats import Paired, Summary, describe_seeds, holm, paired_test, rank
from dlsuite.tracking import record

CURVES = ("train_acc", "val_acc", "train_loss", "val_loss", "gap_acc")
ARTIFACT_DIR = "comparison"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class ChildRun:
    """One finished (or failed) trial of a compare study, as read from MLflow."""

    run_id: str
    variant: str
    seed: int
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    """Per-epoch histories (``train_acc``...) as (epoch, value) pairs."""
    tuned: dict[str, str] = field(default_factory=dict)
    """Strengths a per-variant search settled on (``dlsuite.tuned.<key>`` params or tags)."""
    protocol: str | None = None
    """``bagging`` or ``kfold`` when the trial was a protocol's parent run (``dlsuite.protocol`` tag)."""

    def best_val_acc(self) -> tuple[float, str]:
        """The run's best validation accuracy and what it is: a single model's (``""``), a bagged
        ensemble's (``"ensemble"``), or the members' mean (older bagging records, k-fold)."""
        if self.protocol == "bagging" and record.ENSEMBLE_VAL_ACC in self.metrics:
            return self.metrics[record.ENSEMBLE_VAL_ACC], "ensemble"
        source = {"bagging": "members' mean", "kfold": "mean over folds"}.get(self.protocol or "", "")
        return self.metrics.get(record.BEST_VAL_ACC, math.nan), source


@dataclass
class VariantRow:
    """One line of the comparison table."""

    variant: str
    seeds: list[int]
    failed: int
    metric: Summary
    best_val_acc: Summary
    final_gap_acc: Summary
    best_epoch: Summary
    vs_baseline: Paired | None
    """None for the baseline itself."""
    gap_vs_baseline: Paired | None
    """Paired difference of the final gap (negative: the variant narrows the gap)."""
    p_holm: float = math.nan
    rank: int = 0
    tuned: dict[str, str] = field(default_factory=dict)
    val_source: str = ""
    """What ``best_val_acc`` is when not a single model's: ``ensemble``, ``members' mean``..."""


@dataclass
class Comparison:
    """A compare study's result: rows ranked best first, and the runs it was built from."""

    metric: str
    maximize: bool
    baseline: str
    rows: list[VariantRow]
    children: list[ChildRun]
    parent_run_id: str | None = None
    study: str | None = None
    confidence: float = 0.95

    def row(self, variant: str) -> VariantRow:
        """The row of ``variant``."""
        for r in self.rows:
            if r.variant == variant:
                return r
        raise KeyError(variant)


# -- reading MLflow ------------------------------------------------------------------------------
def _client(uri: str | None) -> Any:
    from dlsuite.tracking import store

    return store.client(uri)


def resolve_parent(client: Any, ref: str) -> str:
    """The parent run id of ``ref``: a run id, or the name of a study (its latest parent run)."""
    if _RUN_ID.match(ref):
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # not a run here: maybe a study with a hex-looking name
            return str(client.get_run(ref).info.run_id)
    exp_ids = [e.experiment_id for e in client.search_experiments()]
    if exp_ids:
        for key in (record.STUDY,):
            runs = client.search_runs(
                exp_ids,
                filter_string=f"tags.`{key}` = '{ref}' and tags.`dlsuite.study_parent` = 'true'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if runs:
                return str(runs[0].info.run_id)
    known: set[str] = set()
    if exp_ids:
        parents = client.search_runs(
            exp_ids, filter_string=record.tag_filter(record.STUDY_PARENT, "true"), max_results=200
        )
        known = {r.data.tags.get(record.STUDY, "") for r in parents} - {""}
    hint = f"; studies in this store: {', '.join(sorted(known))}" if known else "; this store has no study runs"
    raise DlsuiteError(f"no run with id or study named {ref!r} in {client.tracking_uri}{hint}")


def load_children(client: Any, parent_run_id: str, curves: Sequence[str] = CURVES) -> list[ChildRun]:
    """Every child run of ``parent_run_id`` that carries a variant tag, with metrics and histories.

    Histories are read only for finished runs (the only ones the statistics use).
    """
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=record.tag_filter(record.PARENT, parent_run_id),
        max_results=50_000,
    )
    out = []
    for run in runs:
        tags = run.data.tags
        variant = tags.get(record.VARIANT)
        if variant is None:
            continue
        seed_s = tags.get(record.SEED)
        try:
            seed = int(str(seed_s))
        except ValueError:
            continue
        tuned = {
            k[len(record.TUNED_PREFIX) :]: v
            for k, v in {**run.data.params, **tags}.items()
            if k.startswith(record.TUNED_PREFIX)
        }
        child = ChildRun(
            run.info.run_id,
            variant,
            seed,
            run.info.status,
            dict(run.data.metrics),
            tuned=tuned,
            protocol=tags.get(record.PROTOCOL),
        )
        if child.status == "FINISHED":
            for key in curves:
                hist = client.get_metric_history(run.info.run_id, key)
                child.curves[key] = sorted((int(m.step), float(m.value)) for m in hist)
        out.append(child)
    return out


def _study_facts(client: Any, parent_run_id: str) -> tuple[str | None, list[str], str | None, bool | None]:
    """(study name, variant order, metric, maximize) from the parent run's tags and params, when recorded."""
    run = client.get_run(parent_run_id)
    params, tags = run.data.params, run.data.tags
    order: list[str] = []
    try:
        space = json.loads(params.get("study.space", "{}"))
        if isinstance(space, dict):
            order = [str(k) for k in space]
    except ValueError:
        pass
    metric, maximize = None, None
    objective = params.get("study.objectives", "")
    if objective and "," not in objective and ":" in objective:
        metric, direction = objective.split(":", 1)
        maximize = direction.strip() != "minimize"
    return tags.get(record.STUDY), order, metric, maximize


# -- the statistics -------------------------------------------------------------------------------
def default_baseline(variants: Sequence[str]) -> str:
    """``baseline`` or ``none`` when a variant is so named, else the first variant listed."""
    for name in ("baseline", "none", "base"):
        if name in variants:
            return name
    return variants[0]


def build_comparison(
    children: Sequence[ChildRun],
    *,
    metric: str = "test_acc",
    maximize: bool = True,
    baseline: str | None = None,
    order: Sequence[str] | None = None,
    confidence: float = 0.95,
) -> Comparison:
    """Statistics of the finished children, one row per variant, ranked best first.

    Args:
        children: the study's trial runs (failed ones are counted, not used).
        metric: the summary metric compared (the study's objective).
        maximize: whether a larger ``metric`` is better.
        baseline: the variant the others are tested against; default :func:`default_baseline`.
        order: variant order as defined in the study (for the default baseline).
        confidence: level of the intervals.
    """
    variants = list(dict.fromkeys([*(order or []), *sorted({c.variant for c in children})]))
    variants = [v for v in variants if any(c.variant == v for c in children)]
    if not variants:
        raise DlsuiteError("no child runs tagged with a variant: is this the parent run of a compare study?")
    base = baseline or default_baseline(variants)
    if base not in variants:
        raise DlsuiteError(f"baseline {base!r} is not a variant of this study; variants: {', '.join(variants)}")

    def per_seed(variant: str, key: str) -> dict[int, float]:
        return {
            c.seed: float(c.metrics.get(key, math.nan))
            for c in children
            if c.variant == variant and c.status == "FINISHED"
        }

    def val_per_seed(variant: str) -> tuple[dict[int, float], str]:
        finished = [c for c in children if c.variant == variant and c.status == "FINISHED"]
        values = {c.seed: c.best_val_acc() for c in finished}
        sources = sorted({src for _, src in values.values()})
        return {s: v for s, (v, _) in values.items()}, "/".join(x for x in sources if x)

    rows = []
    for v in variants:
        done = per_seed(v, metric)
        val_acc, val_source = val_per_seed(v)
        tuned: dict[str, set[str]] = {}
        for c in children:
            if c.variant == v and c.status == "FINISHED":
                for k, val in c.tuned.items():
                    tuned.setdefault(k, set()).add(val)
        rows.append(
            VariantRow(
                variant=v,
                seeds=sorted(done),
                failed=sum(1 for c in children if c.variant == v and c.status != "FINISHED"),
                metric=describe_seeds(list(done.values()), confidence),
                best_val_acc=describe_seeds(list(val_acc.values()), confidence),
                final_gap_acc=describe_seeds(list(per_seed(v, "final_gap_acc").values()), confidence),
                best_epoch=describe_seeds(list(per_seed(v, "best_epoch").values()), confidence),
                vs_baseline=None if v == base else paired_test(done, per_seed(base, metric), confidence),
                gap_vs_baseline=None
                if v == base
                else paired_test(per_seed(v, "final_gap_acc"), per_seed(base, "final_gap_acc"), confidence),
                tuned={k: "/".join(sorted(vals)) for k, vals in tuned.items()},
                val_source=val_source,
            )
        )
    adjusted = holm({r.variant: r.vs_baseline.t_p for r in rows if r.vs_baseline is not None})
    ranks = rank({r.variant: r.metric.mean for r in rows}, maximize)
    for r in rows:
        r.p_holm = adjusted.get(r.variant, math.nan)
        r.rank = ranks[r.variant]
    rows.sort(key=lambda r: (r.rank, variants.index(r.variant)))
    return Comparison(metric, maximize, base, rows, list(children), confidence=confidence)


# -- rendering -------------------------------------------------------------------------------------
def _pm(s: Summary, digits: int = 3) -> str:
    if s.n == 0 or not math.isfinite(s.mean):
        return "-"
    if not math.isfinite(s.half_width):
        return f"{s.mean:.{digits}f}"
    return f"{s.mean:.{digits}f} ± {s.half_width:.{digits}f}"


def _signed(s: Summary, digits: int = 3) -> str:
    if s.n == 0 or not math.isfinite(s.mean):
        return "-"
    hw = f" ± {s.half_width:.{digits}f}" if math.isfinite(s.half_width) else ""
    return f"{s.mean:+.{digits}f}{hw}"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def table_rows(cmp: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table as display strings (``mean ± half-width of the CI``)."""
    header = [
        "rank",
        "variant",
        "seeds",
        f"{cmp.metric}",
        "best_val_acc",
        "final_gap_acc",
        "best_epoch",
        f"Δ {cmp.metric} vs {cmp.baseline}",
        "p (paired t)",
        "p (Holm)",
        "Δ gap",
    ]
    show_wilcoxon = any(r.vs_baseline is not None and math.isfinite(r.vs_baseline.wilcoxon_p) for r in cmp.rows)
    if show_wilcoxon:
        header.append("p (Wilcoxon)")
    show_tuned = any(r.tuned for r in cmp.rows)
    if show_tuned:
        header.append("tuned")
    body = []
    for r in cmp.rows:
        vs, gap = r.vs_baseline, r.gap_vs_baseline
        line = [
            str(r.rank),
            r.variant + (" (baseline)" if r.variant == cmp.baseline else ""),
            f"{len(r.seeds)}" + (f" ({r.failed} failed)" if r.failed else ""),
            _pm(r.metric),
            _pm(r.best_val_acc) + (f" ({r.val_source})" if r.val_source else ""),
            _pm(r.final_gap_acc),
            _pm(r.best_epoch, 1),
            _signed(vs.diff) if vs else "-",
            _p(vs.t_p) if vs else "-",
            _p(r.p_holm) if vs else "-",
            _signed(gap.diff) if gap else "-",
        ]
        if show_wilcoxon:
            line.append(_p(vs.wilcoxon_p) if vs else "-")
        if show_tuned:
            line.append(", ".join(f"{k}={v}" for k, v in sorted(r.tuned.items())) or "-")
        body.append(line)
    return header, body


def caption(cmp: Comparison) -> str:
    """One line saying what the table shows."""
    seeds = sorted({s for r in cmp.rows for s in r.seeds})
    what = f"study {cmp.study!r}" if cmp.study else "comparison"
    parent = f" (parent run {cmp.parent_run_id})" if cmp.parent_run_id else ""
    text = (
        f"{what}{parent}: {cmp.metric} ({'higher' if cmp.maximize else 'lower'} is better), "
        f"mean ± {cmp.confidence:.0%} CI (t) over seeds {seeds}; Δ and p: paired over seeds "
        f"against {cmp.baseline!r}; Δ gap < 0 narrows the train-validation gap"
    )
    if any(r.val_source for r in cmp.rows):
        text += (
            "; best_val_acc (ensemble): the bagged ensemble's own validation accuracy, like its test numbers; "
            "(members' mean) / (mean over folds): the members' average, not the ensemble's; "
            "final_gap_acc and best_epoch of such rows: the members' means"
        )
    return text


def format_table(cmp: Comparison) -> str:
    """The table as aligned plain text, with its caption."""
    header, body = table_rows(cmp)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [caption(cmp), ""]
    for row in [header, *body]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if row is header:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def format_markdown(cmp: Comparison) -> str:
    """The table as GitHub Markdown, with its caption."""
    header, body = table_rows(cmp)
    lines = [caption(cmp), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def records(cmp: Comparison) -> list[dict[str, Any]]:
    """One flat numeric record per variant (CSV / JSON), with interval bounds and p-values."""
    out = []
    for r in cmp.rows:
        rec: dict[str, Any] = {"rank": r.rank, "variant": r.variant, "baseline": r.variant == cmp.baseline}
        rec.update({"n": len(r.seeds), "failed": r.failed, "seeds": " ".join(map(str, r.seeds))})
        for name, s in (
            (cmp.metric, r.metric),
            ("best_val_acc", r.best_val_acc),
            ("final_gap_acc", r.final_gap_acc),
            ("best_epoch", r.best_epoch),
        ):
            rec.update({f"{name}_mean": s.mean, f"{name}_std": s.std, f"{name}_lo": s.lo, f"{name}_hi": s.hi})
        vs, gap = r.vs_baseline, r.gap_vs_baseline
        rec.update(
            {
                "diff_mean": vs.diff.mean if vs else 0.0,
                "diff_lo": vs.diff.lo if vs else math.nan,
                "diff_hi": vs.diff.hi if vs else math.nan,
                "p_ttest": vs.t_p if vs else math.nan,
                "p_holm": r.p_holm,
                "p_wilcoxon": vs.wilcoxon_p if vs else math.nan,
                "gap_diff_mean": gap.diff.mean if gap else 0.0,
                "gap_p_ttest": gap.t_p if gap else math.nan,
                "tuned": ", ".join(f"{k}={v}" for k, v in sorted(r.tuned.items())),
            }
        )
        out.append(rec)
    return out


# -- writing and logging -----------------------------------------------------------------------------
def write_comparison_files(cmp: Comparison, folder: str | Path) -> list[Path]:
    """Write ``comparison.{txt,md,csv,json}`` and the PNGs into ``folder``; return the paths."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    txt = out / "comparison.txt"
    txt.write_text(format_table(cmp))
    md = out / "comparison.md"
    md.write_text(format_markdown(cmp))
    recs = records(cmp)
    csv_path = out / "comparison.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(recs[0]))
        writer.writeheader()
        writer.writerows(recs)
    js = out / "comparison.json"
    meta = {"metric": cmp.metric, "maximize": cmp.maximize, "baseline": cmp.baseline, "study": cmp.study}
    runs = [{"run_id": c.run_id, "variant": c.variant, "seed": c.seed, "status": c.status} for c in cmp.children]
    js.write_text(json.dumps({**meta, "parent_run_id": cmp.parent_run_id, "rows": recs, "runs": runs}, indent=1))
    paths += [txt, md, csv_path, js]
    paths.append(plot_learning_curves(cmp, out / "learning_curves.png"))
    paths.append(plot_learning_curves(cmp, out / "loss_curves.png", key="loss"))
    paths.append(plot_gaps(cmp, out / "gaps.png"))
    if len(cmp.rows) > 1:
        paths.append(plot_effects(cmp, out / "effects.png"))
    return paths


def _metric_key(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", text)


def log_to_parent(client: Any, cmp: Comparison, paths: Sequence[Path]) -> None:
    """Attach the files under ``comparison/`` of the parent run, and per-variant means as its metrics
    (so that the MLflow UI's run table shows the comparison too)."""
    from mlflow.entities import Metric

    assert cmp.parent_run_id is not None
    for p in paths:
        client.log_artifact(cmp.parent_run_id, str(p), ARTIFACT_DIR)
    metrics = []
    for r in cmp.rows:
        v = _metric_key(r.variant)
        for name, s in ((cmp.metric, r.metric), ("final_gap_acc", r.final_gap_acc)):
            if math.isfinite(s.mean):
                metrics.append(Metric(f"compare.{v}.{name}_mean", s.mean, 0, 0))
    client.log_batch(cmp.parent_run_id, metrics=metrics)
    client.set_tag(cmp.parent_run_id, record.COMPARE_BEST, cmp.rows[0].variant)


def compare_report(
    ref: str,
    *,
    uri: str | None = None,
    baseline: str | None = None,
    metric: str | None = None,
    maximize: bool | None = None,
    out: str | Path | None = None,
    log: bool = True,
) -> tuple[Comparison, list[Path]]:
    """Build, write and (``log``) attach the report of the compare study ``ref`` (parent run id or study name).

    The metric and its direction default to the study's objective recorded on the parent run, else
    ``test_acc`` maximised. Files go to ``out`` (default: a temporary folder, removed after logging).
    """
    client = _client(uri)
    parent = resolve_parent(client, ref)
    study, order, rec_metric, rec_max = _study_facts(client, parent)
    metric = metric or rec_metric or "test_acc"
    if maximize is None:
        maximize = rec_max if rec_max is not None and metric == rec_metric else not metric.endswith("loss")
    children = load_children(client, parent)
    if not children:
        raise DlsuiteError(f"run {parent} has no child runs tagged dlsuite.variant: not a compare study's parent")
    cmp = build_comparison(children, metric=metric, maximize=maximize, baseline=baseline, order=order)
    cmp.parent_run_id, cmp.study = parent, study
    if out is not None:
        paths = write_comparison_files(cmp, out)
        if log:
            log_to_parent(client, cmp, paths)
        return cmp, paths
    with tempfile.TemporaryDirectory(prefix="dlsuite-compare-") as tmp:
        paths = write_comparison_files(cmp, tmp)
        if log:
            log_to_parent(client, cmp, paths)
    return cmp, []
