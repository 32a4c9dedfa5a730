"""Mean over seeds and its Student's t confidence interval: pure functions on plain numbers.

Below the reports on purpose: ``dlsuite train --seeds`` (``runner/seeds.py``) records these
figures on its parent run, and the comparison report (``reports/stats.py``) re-exports them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps


@dataclass(frozen=True)
class Summary:
    """Mean of ``n`` values with a t-distribution confidence interval of that mean."""

    n: int
    mean: float
    std: float
    """Sample standard deviation (ddof=1); NaN for one value."""
    lo: float
    hi: float
    """Bounds of the confidence interval; NaN for fewer than two values."""

    @property
    def half_width(self) -> float:
        """Half the interval's width (the ``±`` of ``mean ± x``)."""
        return (self.hi - self.lo) / 2


def _finite(values: Sequence[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in values], dtype=float)
    return a[np.isfinite(a)]


def describe_seeds(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean over seeds and the ``confidence`` interval of that mean (Student's t, ``scipy.stats.t.interval``).

    NaNs (a seed that did not finish) are dropped.
    """
    a = _finite(values)
    n = len(a)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(a.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    sd = float(a.std(ddof=1))
    if sd == 0.0:  # scipy refuses a zero scale; every seed gave the same value, so the interval is that value
        return Summary(n, mean, 0.0, mean, mean)
    lo, hi = sps.t.interval(confidence, n - 1, loc=mean, scale=sd / math.sqrt(n))
    return Summary(n, mean, sd, float(lo), float(hi))
