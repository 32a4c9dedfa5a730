"""Statistics of a comparison over seeds: mean and confidence interval, paired tests, ranking.

Pure functions on plain numbers, so they can be checked by hand. Each variant is trained with the
same seeds, and a seed fixes the weights' initialisation and the batch order, so two variants' runs
with the same seed are paired: the paired test removes the seed-to-seed variation that both share,
which an unpaired test over 5 seeds would drown in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from dlsuite.runner.intervals import Summary, describe_seeds  # re-exported: the report reads them here


@dataclass(frozen=True)
class Paired:
    """A variant against the baseline over the seeds both have."""

    n: int
    """Number of seeds in common."""
    diff: Summary
    """Mean of (variant - baseline) per seed, with its confidence interval (the paired t interval)."""
    t_p: float
    """Two-sided paired t-test p-value (NaN with fewer than two pairs)."""
    wilcoxon_p: float
    """Two-sided Wilcoxon signed-rank p-value, only with 6 or more pairs (with 5 its smallest
    possible value is 0.0625, so it could never reject at 0.05); NaN otherwise."""


def paired_test(
    variant: Mapping[int, float], baseline: Mapping[int, float], confidence: float = 0.95, min_wilcoxon: int = 6
) -> Paired:
    """Compare two variants seed by seed (only seeds present and finite in both count).

    When every difference is equal the t statistic is undefined: the p-value is then 1 for no difference
    and 0 for a constant non-zero one (the variants differ identically on every seed).
    """
    seeds = sorted(s for s in variant if s in baseline and math.isfinite(variant[s]) and math.isfinite(baseline[s]))
    v = np.asarray([variant[s] for s in seeds], dtype=float)
    b = np.asarray([baseline[s] for s in seeds], dtype=float)
    d = v - b
    n = len(d)
    diff = describe_seeds(d.tolist(), confidence)
    t_p = math.nan
    if n >= 2:
        if diff.std == 0.0:  # scipy returns NaN here; a constant difference is no noise at all
            t_p = 1.0 if diff.mean == 0.0 else 0.0
        else:  # the interval of the mean difference is ttest_rel's confidence_interval, computed above
            t_p = float(sps.ttest_rel(v, b).pvalue)
    w_p = math.nan
    if n >= min_wilcoxon:
        w_p = 1.0 if not np.any(d) else float(sps.wilcoxon(d).pvalue)
    return Paired(n, diff, t_p, w_p)


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (NaNs left out and returned as NaN).

    Several variants are each tested against one baseline; with 12 tests at 0.05 about one would come
    out "significant" by chance, so the report shows the adjusted p-value beside the raw one.
    """
    finite = sorted((p, k) for k, p in pvalues.items() if math.isfinite(p))
    m = len(finite)
    out = {k: math.nan for k in pvalues}
    running = 0.0
    for i, (p, k) in enumerate(finite):
        running = max(running, min(1.0, (m - i) * p))  # keeps the adjusted values monotone
        out[k] = running
    return out


def rank(means: Mapping[str, float], maximize: bool = True) -> dict[str, int]:
    """Rank 1 = best mean; ties share the better rank (competition ranking "1, 2, 2, 4"); NaN ranks last."""

    keys = list(means)
    signed = [(-1.0 if maximize else 1.0) * means[k] for k in keys]
    # NaN ranks last; "min" gives tied values the better rank
    ranks = sps.rankdata([x if math.isfinite(x) else math.inf for x in signed], method="min")
    return {k: int(r) for k, r in zip(keys, ranks, strict=True)}
