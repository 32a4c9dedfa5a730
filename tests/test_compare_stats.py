"""Statistics of comparisons, checked against numbers worked out by hand (t table values)."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from dlsuite.reports.stats import describe_seeds, holm, paired_test, rank

T975_DF2 = 4.303  # t table, two-sided 95%, 2 degrees of freedom
T975_DF4 = 2.776  # 4 degrees of freedom


def test_describe_seeds_mean_and_t_interval() -> None:
    s = describe_seeds([1.0, 2.0, 3.0])
    assert s.n == 3 and s.mean == 2.0 and s.std == pytest.approx(1.0)
    half = T975_DF2 * 1.0 / math.sqrt(3)  # = 2.484
    assert s.lo == pytest.approx(2.0 - half, abs=1e-3) and s.hi == pytest.approx(2.0 + half, abs=1e-3)
    assert s.half_width == pytest.approx(half, abs=1e-3)
    five = describe_seeds([0.90, 0.92, 0.91, 0.93, 0.89])  # mean 0.91, sd 0.01581
    assert five.mean == pytest.approx(0.91)
    assert five.half_width == pytest.approx(T975_DF4 * 0.015811 / math.sqrt(5), abs=1e-4)


def test_describe_seeds_edge_cases() -> None:
    one = describe_seeds([0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.lo) and math.isnan(one.std)
    assert describe_seeds([]).n == 0 and math.isnan(describe_seeds([]).mean)
    assert describe_seeds([1.0, float("nan"), 3.0]).n == 2  # a missing seed does not poison the mean
    same = describe_seeds([0.7, 0.7, 0.7])
    assert same.lo == pytest.approx(0.7) and same.hi == pytest.approx(0.7)


def test_paired_t_test_by_hand_and_against_scipy() -> None:
    base = {0: 0.80, 1: 0.80, 2: 0.80}
    var = {0: 0.82, 1: 0.84, 2: 0.83}
    p = paired_test(var, base)
    # differences 0.02, 0.04, 0.03: mean 0.03, sd 0.01, t = 0.03 / (0.01 / sqrt 3) = 5.196
    assert p.n == 3 and p.diff.mean == pytest.approx(0.03) and p.diff.std == pytest.approx(0.01)
    assert p.t_p == pytest.approx(2 * sps.t.sf(5.196, 2), rel=1e-3)
    assert p.t_p == pytest.approx(sps.ttest_rel([0.82, 0.84, 0.83], [0.8, 0.8, 0.8]).pvalue)
    assert 0.03 < p.t_p < 0.04
    assert math.isnan(p.wilcoxon_p)  # fewer than 6 pairs


def test_paired_test_pairs_by_seed_and_handles_degenerate_cases() -> None:
    # seed 3 only in the variant, seed 9 only in the baseline: both ignored; order of dicts irrelevant
    p = paired_test({3: 0.1, 1: 0.6, 0: 0.5}, {0: 0.4, 9: 0.0, 1: 0.5})
    assert p.n == 2 and p.diff.mean == pytest.approx(0.1)
    assert p.t_p == 0.0  # identical non-zero difference on every seed
    assert paired_test({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6}).t_p == 1.0
    assert math.isnan(paired_test({0: 0.5}, {0: 0.4}).t_p)


def test_wilcoxon_with_six_pairs() -> None:
    base = dict.fromkeys(range(6), 0.5)
    var = {s: 0.5 + 0.01 * (s + 1) for s in range(6)}  # all six differences positive
    p = paired_test(var, base)
    assert p.wilcoxon_p == pytest.approx(2 / 2**6)  # exact: only 1 of 64 sign patterns is as extreme, two-sided


def test_holm_adjustment() -> None:
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": math.nan})
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert adj["a"] == pytest.approx(0.03) and adj["c"] == pytest.approx(0.06) and adj["b"] == pytest.approx(0.06)
    assert math.isnan(adj["d"])


def test_rank_competition_style() -> None:
    assert rank({"a": 0.9, "b": 0.95, "c": 0.9, "d": 0.5}) == {"b": 1, "a": 2, "c": 2, "d": 4}
    assert rank({"a": 0.9, "b": 0.1}, maximize=False) == {"b": 1, "a": 2}
    assert rank({"a": math.nan, "b": 0.1}) == {"b": 1, "a": 2}


def test_paired_interval_is_scipys_paired_t_interval() -> None:
    var, base = [0.82, 0.85, 0.83, 0.86], [0.80, 0.81, 0.80, 0.83]
    p = paired_test(dict(enumerate(var)), dict(enumerate(base)), confidence=0.9)
    ci = sps.ttest_rel(var, base).confidence_interval(0.9)
    assert p.diff.lo == pytest.approx(ci.low) and p.diff.hi == pytest.approx(ci.high)
