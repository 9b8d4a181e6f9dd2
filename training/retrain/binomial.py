"""Exact binomial inference for false-positive rates: tail probabilities and Clopper–Pearson intervals.

Pure numpy + math (no scipy). Used by the retrain gate (:mod:`training.retrain.gate`) to decide
whether ``k`` false positives among ``n`` held-out normals *show* a rate outside a tolerated range,
rather than comparing the point estimate ``k / n`` with the range (which decides on noise when
``n * rate`` is small).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

_BISECTION_STEPS = 60  # interval width 2**-60: far below any rate we report


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``, exact (summed in log space).

    Raises:
        ValueError: ``n < 0`` or ``p`` outside ``[0, 1]``.
    """
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"need n >= 0 and 0 <= p <= 1, got n={n}, p={p}")
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p == 0.0:
        return 1.0
    if p == 1.0:
        return 0.0
    i = np.arange(k + 1, dtype=np.float64)
    # log C(n, i) = sum_{j<i} log(n - j) - sum_{j<i} log(j + 1), accumulated for every i <= k.
    steps = np.log(n - i[:-1]) - np.log(i[:-1] + 1.0)
    log_choose = np.concatenate([[0.0], np.cumsum(steps)])
    log_pmf = log_choose + i * math.log(p) + (n - i) * math.log1p(-p)
    top = float(log_pmf.max())
    return min(1.0, math.exp(top) * float(np.exp(log_pmf - top).sum()))


def clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    """Two-sided exact (Clopper–Pearson) interval for a rate, from ``k`` successes in ``n`` trials.

    Each side misses the true rate with probability at most ``(1 - confidence) / 2``.

    Raises:
        ValueError: ``n < 1``, ``k`` outside ``[0, n]`` or ``confidence`` outside ``(0, 1)``.
    """
    if n < 1 or not 0 <= k <= n or not 0.0 < confidence < 1.0:
        raise ValueError(f"need n >= 1, 0 <= k <= n and 0 < confidence < 1, got k={k}, n={n}, {confidence}")
    tail = (1.0 - confidence) / 2.0
    # Lower: the p at which P(X >= k) = tail; upper: the p at which P(X <= k) = tail.
    lower = 0.0 if k == 0 else _solve(lambda p: 1.0 - binomial_cdf(k - 1, n, p) - tail, increasing=True)
    upper = 1.0 if k == n else _solve(lambda p: binomial_cdf(k, n, p) - tail, increasing=False)
    return lower, upper


def min_rows_to_judge(rate: float, expected: float = 10.0) -> int:
    """Rows needed so that ``expected`` events are expected at ``rate`` (``ceil(expected / rate)``)."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    return math.ceil(expected / rate - 1e-9)


def _solve(f: Callable[[float], float], *, increasing: bool) -> float:
    """Root of a monotone ``f`` on ``[0, 1]`` by bisection."""
    lo, hi = 0.0, 1.0
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2.0
        if (f(mid) < 0.0) == increasing:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0
