"""The comparison report end to end: a compare study run by the real study runner into a temporary
MLflow store, read back by the real report; the table checked numerically against the runs' own
metrics, plots and files attached to the parent run, and the CLI."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_hex
from mlflow import MlflowClient
from scipy import stats as sps

from dlsuite.cli import main
from dlsuite.hpo.spec import load_study_spec
from dlsuite.hpo.study import run_study
from dlsuite.reports.comparison import ChildRun, build_comparison, compare_report, format_table
from dlsuite.reports.plots import BETTER, UNCLEAR, effects_figure, learning_curves_figure
from dlsuite.tracking import record

CNN = Path(__file__).resolve().parents[1] / "configs" / "mnist1d_cnn.yaml"
VARIANTS = {"none": [], "dropout": ["model.dropout=0.5"], "diverges": ["optim.name=sgd", "optim.lr=1e12"]}
SEEDS = [0, 1, 2]
STUDY = f"""name: tinycmp
base: {CNN}
type: compare
overrides: [trainer.max_epochs=1, trainer.progress_bar=false, data.batch_size=50, data.train_samples=300,
            data.args.val_samples=200, model.width=8, tracking.log_checkpoint=false, tracking.plots=false]
variants:
{chr(10).join(f"  {v}: [{', '.join(sets)}]" for v, sets in VARIANTS.items())}
seeds: {SEEDS}
metric: test_acc
"""


def _study(tmp_path: Path, store: str) -> tuple[MlflowClient, str, dict[tuple[str, int], str]]:
    """Run the compare study; return the client, the parent run and the child run of each finished pair."""
    path = tmp_path / "tinycmp.yaml"
    path.write_text(STUDY)
    result = run_study(load_study_spec(path))
    assert result.parent_run_id is not None
    c = MlflowClient(store)
    exp = c.get_experiment_by_name("tinycmp").experiment_id
    kids = c.search_runs([exp], filter_string=f"tags.`{record.PARENT}` = '{result.parent_run_id}'")
    runs = {(r.data.tags[record.VARIANT], int(r.data.tags[record.SEED])): r.info.run_id for r in kids}
    return c, result.parent_run_id, runs


@pytest.mark.slow  # 9 one-epoch runs through the study runner (3 of them diverge at once)
def test_report_matches_the_child_runs_and_is_attached(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c, parent, runs = _study(tmp_path, store)
    assert sorted(runs) == sorted((v, s) for v in VARIANTS for s in SEEDS)

    def metric(v: str, key: str) -> list[float]:
        return [c.get_run(runs[(v, s)]).data.metrics[key] for s in SEEDS]

    cmp, paths = compare_report(parent, out=tmp_path / "out")
    assert cmp.metric == "test_acc" and cmp.maximize and cmp.baseline == "none" and cmp.study == "tinycmp"
    n = len(SEEDS)
    for v in ("none", "dropout"):
        row = cmp.row(v)
        assert row.seeds == SEEDS and row.failed == 0
        acc = metric(v, "test_acc")
        assert row.metric.mean == pytest.approx(sum(acc) / n)
        half = sps.t.ppf(0.975, n - 1) * sps.tstd(acc) / math.sqrt(n)
        assert row.metric.half_width == pytest.approx(half)
        assert row.best_val_acc.mean == pytest.approx(sum(metric(v, "best_val_acc")) / n)
        assert row.final_gap_acc.mean == pytest.approx(sum(metric(v, "final_gap_acc")) / n)
        assert row.best_epoch.mean == pytest.approx(sum(metric(v, "best_epoch")) / n)
    # the diverging variant's trials failed: counted as failed, nothing averaged, ranked last
    bad = cmp.row("diverges")
    assert bad.failed == n and bad.seeds == [] and math.isnan(bad.metric.mean)
    assert cmp.rows[-1].variant == "diverges"
    drop = cmp.row("dropout")
    assert drop.vs_baseline is not None and cmp.row("none").vs_baseline is None
    diffs = [a - b for a, b in zip(metric("dropout", "test_acc"), metric("none", "test_acc"))]
    assert len(set(diffs)) > 1  # the seeds disagree, so the paired t-test is defined
    assert drop.vs_baseline.diff.mean == pytest.approx(sum(diffs) / n)
    expected_p = sps.ttest_rel(metric("dropout", "test_acc"), metric("none", "test_acc")).pvalue
    assert drop.vs_baseline.t_p == pytest.approx(expected_p)
    assert drop.p_holm == pytest.approx(drop.vs_baseline.t_p)  # one finite test: Holm changes nothing
    best = max(("none", "dropout"), key=lambda v: sum(metric(v, "test_acc")))
    assert cmp.rows[0].variant == best and cmp.rows[0].rank == 1

    # files: the CSV holds the same numbers, the text table the variants, the PNGs exist
    names = {p.name for p in paths}
    assert names == {
        "comparison.txt",
        "comparison.md",
        "comparison.csv",
        "comparison.json",
        "learning_curves.png",
        "loss_curves.png",
        "gaps.png",
        "effects.png",
    }
    for p in paths:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    rows = {r["variant"]: r for r in csv.DictReader((tmp_path / "out" / "comparison.csv").open())}
    assert float(rows["none"]["test_acc_mean"]) == pytest.approx(sum(metric("none", "test_acc")) / n)
    assert float(rows["dropout"]["diff_mean"]) == pytest.approx(sum(diffs) / n)
    assert rows["diverges"]["failed"] == str(n) and rows["dropout"]["failed"] == "0"
    text = (tmp_path / "out" / "comparison.txt").read_text()
    assert "none (baseline)" in text and "p (paired t)" in text and f"{n} failed" in text

    # attached to the parent run, with per-variant means as its metrics
    arts = {a.path for a in c.list_artifacts(parent, "comparison")}
    assert {"comparison/comparison.csv", "comparison/learning_curves.png", "comparison/gaps.png"} <= arts
    pm = c.get_run(parent).data.metrics
    assert pm["compare.none.test_acc_mean"] == pytest.approx(cmp.row("none").metric.mean)
    assert c.get_run(parent).data.tags["dlsuite.compare_best"] == best

    # the CLI finds the study by name and prints the same table
    assert main(["compare", "report", "tinycmp", "--no-log"]) == 0
    out = capsys.readouterr().out
    assert format_table(cmp).splitlines()[2] in out  # the header line
    assert main(["compare", "report", parent, "--no-log", "--baseline", "dropout", "--metric", "best_val_acc"]) == 0
    out = capsys.readouterr().out
    assert "dropout (baseline)" in out and "Δ best_val_acc vs dropout" in out


def test_report_bad_references_exit_2_and_write_nothing(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "report", "no-such-study"]) == 2
    assert "no run with id or study named 'no-such-study'" in capsys.readouterr().err
    assert main(["compare", "report", "0" * 32]) == 2  # looks like a run id, is none
    assert "no run with id" in capsys.readouterr().err
    c = MlflowClient(store)
    from dlsuite.tracking import store as st

    exp = st.experiment_id(c, "lonely")
    lonely = c.create_run(exp).info.run_id
    assert main(["compare", "report", lonely]) == 2
    assert "not a compare study's parent" in capsys.readouterr().err
    assert c.list_artifacts(lonely) == []


# -- the pictures' structure, from synthetic child runs (no training: the figures are what is tested) --
BASE = [0.80, 0.82, 0.79, 0.81, 0.83]


def _children(effects: dict[str, list[float]], protocol: dict[str, str] | None = None) -> list[ChildRun]:
    """Finished child runs: per variant, test_acc = baseline + the given per-seed effect, with curves."""
    out = []
    for v, eff in {"none": [0.0] * 5, **effects}.items():
        for seed, (b, e) in enumerate(zip(BASE, eff)):
            acc = b + e
            metrics = {"test_acc": acc, "best_val_acc": acc - 0.01, "final_gap_acc": 0.1, "best_epoch": 3.0}
            if (protocol or {}).get(v) == "bagging":
                metrics |= {"ensemble_val_acc": acc - 0.02, "best_val_acc": acc - 0.02}
            curves = {
                k: [(ep, acc * (ep + 1) / 4 + (0.05 if k.startswith("train") else 0.0)) for ep in range(4)]
                for k in ("train_acc", "val_acc", "train_loss", "val_loss", "gap_acc")
            }
            run = ChildRun(f"{v}{seed}", v, seed, "FINISHED", metrics, curves, protocol=(protocol or {}).get(v))
            out.append(run)
    return out


def test_forest_plot_colours_by_the_holm_adjusted_test_and_says_so() -> None:
    # "small" helps on every seed (raw p < 0.05), but with four variants tested Holm's p is above 0.05;
    # "big" helps clearly enough to survive the adjustment; the others do nothing.
    effects = {
        "small": [0.004, 0.012, 0.001, 0.010, 0.006],
        "big": [0.050, 0.052, 0.049, 0.051, 0.050],
        "noise1": [0.01, -0.01, 0.0, 0.005, -0.004],
        "noise2": [-0.01, 0.01, 0.002, -0.006, 0.003],
    }
    cmp = build_comparison(_children(effects), metric="test_acc", maximize=True, baseline="none")
    small, big = cmp.row("small"), cmp.row("big")
    assert small.vs_baseline is not None and small.vs_baseline.t_p < 0.05 < small.p_holm  # the case
    assert big.p_holm < 0.05
    fig = effects_figure(cmp)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    points = [bar.lines[0] for bar in ax.containers]  # one errorbar per variant, in row order
    colour = {label: to_hex(line.get_color()) for label, line in zip(labels, points, strict=True)}
    assert colour["small"] == to_hex(UNCLEAR) and colour["big"] == to_hex(BETTER)
    legend = ax.get_legend()
    assert "Holm-adjusted" in legend.get_title().get_text()
    assert all("Holm-adjusted p" in t.get_text() for t in legend.get_texts())
    plt.close(fig)


def test_learning_curves_are_one_panel_per_variant_on_shared_axes() -> None:
    cmp = build_comparison(
        _children({"a": [0.01] * 5, "b": [-0.01] * 5, "c": [0.02] * 5}), metric="test_acc", baseline="none"
    )
    fig = learning_curves_figure(cmp)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert sorted(ax.get_title().split()[0] for ax in panels) == ["a", "b", "c"]  # the baseline is in each panel
    assert len({ax.get_ylim() for ax in panels}) == 1 and len({ax.get_xlim() for ax in panels}) == 1
    for ax in panels:  # variant and baseline, train and validation: four lines, two colours
        assert len(ax.lines) == 4 and len({to_hex(line.get_color()) for line in ax.lines}) == 2
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["variant, train", "variant, validation", "baseline (none), train", "baseline (none), validation"]
    plt.close(fig)


def test_bagging_rows_label_their_validation_accuracy() -> None:
    children = _children({"bagging": [0.01] * 5}, protocol={"bagging": "bagging"})
    cmp = build_comparison(children, metric="test_acc", baseline="none")
    row = cmp.row("bagging")
    assert row.val_source == "ensemble" and row.best_val_acc.mean == pytest.approx(
        sum(BASE) / 5 + 0.01 - 0.02
    )  # the ensemble's validation accuracy, not the members' mean
    text = format_table(cmp)
    assert "(ensemble)" in text and "the bagged ensemble's own validation accuracy" in text
    # An older record without the ensemble's validation accuracy is labelled the members' mean.
    for c in children:
        c.metrics.pop("ensemble_val_acc", None)
    assert build_comparison(children, metric="test_acc", baseline="none").row("bagging").val_source == "members' mean"
