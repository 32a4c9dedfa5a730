"""The comparison report end to end: a compare study run by the real study runner into a temporary
MLflow store, read back by the real report; the table checked numerically against the runs' own
metrics, plots and files attached to the parent run, and the CLI."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient
from scipy import stats as sps

from dlsuite.cli import main
from dlsuite.hpo.spec import load_study_spec
from dlsuite.hpo.study import run_study
from dlsuite.reports.comparison import compare_report, format_table
from dlsuite.tracking import record

CNN = Path(__file__).resolve().parents[1] / "configs" / "mnist1d_cnn.yaml"
VARIANTS = {"none": [], "dropout": ["model.dropout=0.5"], "diverges": ["optim.name=sgd", "optim.lr=1e12"]}
SEEDS = [0, 1, 2]
STUDY = f"""name: tinycmp
base: {CNN}
type: compare
overrides: [trainer.max_epochs=1, trainer.progress_bar=false, data.batch_size=50, data.train_samples=300,
            data.args.val_samples=200, model.channels=8, tracking.log_checkpoint=false, tracking.plots=false]
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
