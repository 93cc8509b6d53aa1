"""Small statistics helpers shared by evaluation, comparison and reports.

* :func:`bootstrap_ci` — percentile bootstrap interval of a mean (accuracy of 0/1 outcomes).
* :func:`paired_bootstrap_ci` — interval of the difference of two paired means (same items).
* :func:`mcnemar_exact` — exact two-sided McNemar test on paired 0/1 outcomes.
* :func:`wilson_ci` — Wilson score interval of a proportion (closed form, for k of n).

All are deterministic (fixed seed) so that metrics files are reproducible byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(values)``; ``(nan, nan)`` for no values."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    # chunked so memory stays small for large n
    chunk = max(1, 2_000_000 // n)
    for s in range(0, resamples, chunk):
        k = min(chunk, resamples - s)
        idx = rng.integers(0, n, size=(k, n))
        means[s : s + k] = x[idx].mean(axis=1)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return (float(lo), float(hi))


def paired_bootstrap_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(b) - mean(a)``, resampling items jointly."""
    xa = np.asarray(a, dtype=np.float64)
    xb = np.asarray(b, dtype=np.float64)
    if xa.shape != xb.shape:
        raise ValueError("paired samples must have the same length")
    return bootstrap_ci(xb - xa, confidence=confidence, resamples=resamples, seed=seed)


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Exact (binomial) two-sided McNemar test on paired outcomes.

    Returns ``{"only_a": n01, "only_b": n10, "p_value": p}`` where ``only_a`` counts items that
    ``a`` got right and ``b`` wrong. ``p = min(1, 2 * P[X <= min(only_a, only_b)])`` with
    ``X ~ Binomial(only_a + only_b, 1/2)``; 1.0 when there is no discordant pair.
    """
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    n = only_a + only_b
    if n == 0:
        return {"only_a": 0, "only_b": 0, "p_value": 1.0}
    k = min(only_a, only_b)
    # exact tail with integers, then one division (no float underflow for large n)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    p = min(1.0, 2 * tail / 2**n)
    return {"only_a": only_a, "only_b": only_b, "p_value": float(p)}


def wilson_ci(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of ``k / n`` (``(0, 0)`` for ``n == 0``)."""
    if n == 0:
        return 0.0, 0.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)
