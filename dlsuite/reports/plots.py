"""The comparison report's pictures: learning curves, gaps and effects (forest plot).

Each ``*_figure`` function returns a matplotlib Figure (tests read its legends and colours); the
``plot_*`` functions save it. Colours: the baseline is always grey, a variant's own colour comes from
``tab10`` (distinct hues; ``tab20``'s neighbours are pairs of near-identical shades), and the forest
plot's colour says what the table's Holm-adjusted test says, nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlsuite.reports.stats import describe_seeds

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from dlsuite.reports.comparison import ChildRun, Comparison

BASELINE_COLOUR = "0.45"
VARIANT_COLOUR = "tab:blue"
BETTER, WORSE, UNCLEAR = "tab:green", "tab:red", "0.55"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curve_stats(
    children: Sequence[ChildRun], variant: str, key: str, confidence: float
) -> tuple[list[int], list[float], list[float], list[float]]:
    """Epochs, mean, and CI band of a per-epoch metric over the variant's seeds (epochs a seed lacks,
    after early stopping, are averaged over the seeds that have them)."""
    by_epoch: dict[int, list[float]] = {}
    for c in children:
        if c.variant == variant and c.status == "FINISHED":
            for step, value in c.curves.get(key, []):
                by_epoch.setdefault(step, []).append(value)
    epochs = sorted(by_epoch)
    sums = [describe_seeds(by_epoch[e], confidence) for e in epochs]
    mean = [s.mean for s in sums]
    lo = [s.lo if math.isfinite(s.lo) else s.mean for s in sums]
    hi = [s.hi if math.isfinite(s.hi) else s.mean for s in sums]
    return epochs, mean, lo, hi


def _grid(n: int) -> tuple[int, int]:
    cols = min(4, max(1, n))
    return math.ceil(n / cols), cols


def learning_curves_figure(cmp: Comparison, key: str = "acc") -> Figure:
    """Small multiples: one panel per variant, its train (solid) and validation (dashed) ``key`` against
    the baseline's (grey), mean with a CI band over seeds; every panel on the same axes."""
    plt = _pyplot()
    others = [r for r in cmp.rows if r.variant != cmp.baseline] or list(cmp.rows)
    nrows, ncols = _grid(len(others))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows + 0.9), sharex=True, sharey=True, squeeze=False
    )
    for ax in axes.flat[len(others) :]:
        ax.set_visible(False)
    for ax, row in zip(axes.flat, others):
        shown = [(cmp.baseline, BASELINE_COLOUR)] if row.variant != cmp.baseline else []
        for variant, colour in [*shown, (row.variant, VARIANT_COLOUR)]:
            for split, style in (("train", "-"), ("val", "--")):
                epochs, mean, lo, hi = curve_stats(cmp.children, variant, f"{split}_{key}", cmp.confidence)
                if not epochs:
                    continue
                if key == "loss":  # a log axis: keep the band's lower edge positive
                    lo = [max(low, m / 10) for low, m in zip(lo, mean)]
                ax.plot(epochs, mean, style, color=colour, lw=1.5)
                ax.fill_between(epochs, lo, hi, color=colour, alpha=0.15, lw=0)
        vs = row.vs_baseline
        p = "" if not math.isfinite(row.p_holm) else f", p Holm {row.p_holm:.2f}"
        title = row.variant if vs is None else f"{row.variant}  (Δ {cmp.metric} {vs.diff.mean:+.3f}{p})"
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if key == "loss":
            ax.set_yscale("log")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy" if key == "acc" else "loss")
    handles = [
        plt.Line2D([], [], color=VARIANT_COLOUR, ls="-", label="variant, train"),
        plt.Line2D([], [], color=VARIANT_COLOUR, ls="--", label="variant, validation"),
        plt.Line2D([], [], color=BASELINE_COLOUR, ls="-", label=f"baseline ({cmp.baseline}), train"),
        plt.Line2D([], [], color=BASELINE_COLOUR, ls="--", label=f"baseline ({cmp.baseline}), validation"),
    ]
    fig.legend(handles=handles, loc="upper center", ncol=4, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 1.0))
    what = "accuracy" if key == "acc" else "loss"
    fig.suptitle(f"{what} per epoch: mean and {cmp.confidence:.0%} CI band over seeds", y=1.04, fontsize=11)
    fig.tight_layout()
    return fig


def gaps_figure(cmp: Comparison) -> Figure:
    """Final train-validation accuracy gap per variant (bars with CI), and the gap per epoch."""
    plt = _pyplot()
    rows = sorted(cmp.rows, key=lambda r: r.final_gap_acc.mean if math.isfinite(r.final_gap_acc.mean) else math.inf)
    fig, (bar, curve) = plt.subplots(1, 2, figsize=(13, max(4.0, 0.35 * len(rows) + 1.5)))
    y = np.arange(len(rows))
    means = [r.final_gap_acc.mean for r in rows]
    err = [r.final_gap_acc.half_width if math.isfinite(r.final_gap_acc.half_width) else 0.0 for r in rows]
    colours = [BASELINE_COLOUR if r.variant == cmp.baseline else VARIANT_COLOUR for r in rows]
    bar.barh(y, means, xerr=err, color=colours, alpha=0.8, capsize=3)
    bar.set_yticks(y, [r.variant for r in rows])
    bar.invert_yaxis()
    bar.axvline(0, color="black", lw=0.8)
    bar.set_xlabel("final gap: train acc - validation acc")
    bar.set_title(f"final gap per variant ({cmp.confidence:.0%} CI; baseline grey)")
    # The per-epoch panel keeps one line per variant, means only (bands of a dozen lines hide each other):
    # tab10 without its grey (the baseline's, dashed); past 9 variants line styles cycle with the colours.
    palette = [plt.get_cmap("tab10")(i) for i in range(10) if i != 7]
    styles = ["-", "-.", ":"]
    k = 0
    for r in cmp.rows:
        epochs, mean, _, _ = curve_stats(cmp.children, r.variant, "gap_acc", cmp.confidence)
        if not epochs:
            continue
        if r.variant == cmp.baseline:
            colour, style = BASELINE_COLOUR, "--"
        else:
            colour, style = palette[k % len(palette)], styles[(k // len(palette)) % len(styles)]
            k += 1
        curve.plot(epochs, mean, style, color=colour, lw=1.6, label=r.variant)
    curve.axhline(0, color="black", lw=0.8)
    curve.set_xlabel("epoch")
    curve.set_ylabel("gap (train - validation accuracy)")
    curve.grid(alpha=0.3)
    curve.legend(fontsize=8, ncol=2)
    curve.set_title("gap per epoch (mean over seeds)")
    fig.tight_layout()
    return fig


def effect_class(cmp: Comparison, p_holm: float, diff_mean: float) -> str:
    """``better``, ``worse`` or ``unclear``: the Holm-adjusted paired t-test at ``1 - confidence``."""
    alpha = 1 - cmp.confidence
    if not (math.isfinite(p_holm) and p_holm < alpha):
        return "unclear"
    return "better" if (diff_mean > 0) == cmp.maximize else "worse"


def effects_figure(cmp: Comparison) -> Figure:
    """Forest plot: each variant's paired difference to the baseline with its CI, coloured by the table's
    Holm-adjusted test (the interval drawn is the unadjusted one, as in the table's Δ column)."""
    plt = _pyplot()
    rows = [r for r in cmp.rows if r.vs_baseline is not None]
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.4 * len(rows) + 2.0)))
    colour_of = {"better": BETTER, "worse": WORSE, "unclear": UNCLEAR}
    for i, r in enumerate(rows):
        assert r.vs_baseline is not None
        d = r.vs_baseline.diff
        err = d.half_width if math.isfinite(d.half_width) else 0.0
        colour = colour_of[effect_class(cmp, r.p_holm, d.mean)]
        ax.errorbar(d.mean, i, xerr=err, fmt="o", color=colour, capsize=3, ms=6)
        p = "-" if not math.isfinite(r.p_holm) else ("<0.001" if r.p_holm < 0.001 else f"{r.p_holm:.3f}")
        ax.annotate(f"p Holm {p}", (1.0, i), xycoords=("axes fraction", "data"), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8, color=colour)  # fmt: skip
    ax.set_yticks(np.arange(len(rows)), [r.variant for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"Δ {cmp.metric} vs {cmp.baseline} (paired over seeds; bars: unadjusted {cmp.confidence:.0%} CI)")
    ax.grid(alpha=0.3, axis="x")
    alpha = 1 - cmp.confidence
    better = "higher" if cmp.maximize else "lower"
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=BETTER, label=f"better ({better}): Holm-adjusted p < {alpha:g}"),
        plt.Line2D([], [], marker="o", ls="", color=WORSE, label=f"worse: Holm-adjusted p < {alpha:g}"),
        plt.Line2D([], [], marker="o", ls="", color=UNCLEAR, label=f"no clear difference: Holm-adjusted p ≥ {alpha:g}"),
    ]
    ax.legend(
        handles=handles,
        title="colour: paired t-test, Holm-adjusted over variants",
        fontsize=8,
        title_fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.1),
        ncol=1,
        frameon=False,
    )
    ax.set_title(f"effect of each variant on {cmp.metric}", fontsize=10)
    fig.tight_layout()
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG and close it."""
    fig.savefig(path, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_learning_curves(cmp: Comparison, path: Path, key: str = "acc") -> Path:
    """Save :func:`learning_curves_figure` to ``path``."""
    return save(learning_curves_figure(cmp, key), path)


def plot_gaps(cmp: Comparison, path: Path) -> Path:
    """Save :func:`gaps_figure` to ``path``."""
    return save(gaps_figure(cmp), path)


def plot_effects(cmp: Comparison, path: Path) -> Path:
    """Save :func:`effects_figure` to ``path``."""
    return save(effects_figure(cmp), path)
