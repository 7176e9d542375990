"""Class separability J = tr(S_B) / tr(S_W) of FG/BG pixel features (paper Appendix D,
Eqs. 4-6, after Duda et al. 2000), computed per image:

- S_W = sum_i sum_j (x_ij - m_i)(x_ij - m_i)^T: the scatter of each class around its own
  mean, summed over the pixels (no prior, no 1/n_i);
- S_B = sum_i n_i (m_i - m)(m_i - m)^T: each class mean's offset from the mean m of ALL
  feature vectors, weighted by the class's pixel count n_i;
- J = tr(S_B) / tr(S_W).

Both are sums over pixels, so J is the ratio of the prior-weighted between-class variance
to the pooled within-class variance. Only the traces are needed, so the cost is O(N C)
without forming C x C matrices. J is invariant to permuting the samples, to translating
all features and to scaling them all by one factor.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pixelcam.metrics.pxap import IGNORE, to_numpy

_CHUNK = 1 << 16  # rows per chunk when summing squared deviations (bounded float64 memory)


def _scatter_trace(x: np.ndarray, mean: np.ndarray) -> float:
    """sum_j ||x_j - mean||^2 in float64, chunked over rows."""
    total = 0.0
    for start in range(0, len(x), _CHUNK):
        d = x[start : start + _CHUNK].astype(np.float64) - mean
        total += float(np.einsum("ij,ij->", d, d))
    return total


def separability_index(features: Any, labels: Any) -> float:
    """J of features ``[N, C]`` with labels ``[N]`` in {0, 1} (numpy or torch).

    NaN when a class is absent or when every feature vector is the same; inf when both
    classes are point masses at different places (zero within-class scatter).
    """
    x = to_numpy(features)
    y = to_numpy(labels).ravel()
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"features must be [N, C] with N labels, got features {x.shape} and labels {y.shape}"
        )
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 or 1, found {np.unique(y)[:5].tolist()}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    n, means, s_w = [], [], 0.0
    for c in (0, 1):
        xc = x[y == c]
        if len(xc) == 0:
            return float("nan")
        mc = xc.mean(axis=0, dtype=np.float64)
        s_w += _scatter_trace(xc, mc)
        n.append(len(xc))
        means.append(mc)
    m = (n[0] * means[0] + n[1] * means[1]) / (n[0] + n[1])
    s_b = sum(float(nc * ((mc - m) ** 2).sum()) for nc, mc in zip(n, means))
    if s_w == 0.0:
        return float("inf") if s_b > 0 else float("nan")
    return s_b / s_w


def _nearest_indices(src: int, dst: int) -> np.ndarray:
    """Nearest source index at the centre of each of ``dst`` cells spanning ``src`` pixels."""
    return np.minimum(((np.arange(dst) + 0.5) * src / dst).astype(np.int64), src - 1)


def feature_map_separability(feature_map: Any, mask: Any, ignore: int = IGNORE) -> float:
    """J of the pixels of a feature map ``[C, h, w]`` labelled by a mask ``[H, W]``
    (1 = FG, 0 = BG, ``ignore`` = left out).

    The mask is brought to feature resolution by nearest-neighbour sampling at the centre
    of each feature cell (``torch``'s ``nearest-exact``; any other value than 0/1/``ignore``
    is an error). Nearest keeps every label a real pixel label and keeps ignored pixels
    ignored, where area-averaging would invent labels at FG/BG/ignore borders.
    NaN when one class is absent at feature resolution.
    """
    f = to_numpy(feature_map)
    mk = to_numpy(mask)
    if f.ndim != 3 or mk.ndim != 2:
        raise ValueError(
            f"expected feature_map [C, h, w] and mask [H, W], got {f.shape} and {mk.shape}"
        )
    if 0 in f.shape or 0 in mk.shape:
        raise ValueError(f"empty feature map {f.shape} or mask {mk.shape}")
    c, h, w = f.shape
    rows, cols = _nearest_indices(mk.shape[0], h), _nearest_indices(mk.shape[1], w)
    small = mk[np.ix_(rows, cols)].ravel()
    keep = small != ignore
    labels = small[keep]
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError(
            f"mask must hold 0, 1 or {ignore} (ignore), found {np.unique(labels)[:5].tolist()}"
        )
    return separability_index(f.reshape(c, -1).T[keep], labels)
