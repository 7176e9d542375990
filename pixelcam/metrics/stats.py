"""Paired t-test between two methods' per-image scores (paper Tables 2, 9, 10)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pixelcam.metrics.pxap import to_numpy


def paired_ttest(a: Any, b: Any) -> tuple[float, float, int]:
    """``(t, p, n)`` of scipy's two-sided ``ttest_rel(a, b)`` over the ``n`` pairs where both
    scores are finite (pairs with a NaN, e.g. a per-image PxAP of an image without
    foreground, are dropped). ``t > 0`` when ``a`` is larger on average.

    Raises ``ValueError`` for sequences of different lengths or fewer than 2 pairs left.
    """
    from scipy.stats import ttest_rel

    a = to_numpy(a).astype(np.float64).ravel()
    b = to_numpy(b).astype(np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.size} and {b.size}")
    keep = np.isfinite(a) & np.isfinite(b)
    n = int(keep.sum())
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 finite pairs, got {n}")
    res = ttest_rel(a[keep], b[keep])
    return float(res.statistic), float(res.pvalue), n
