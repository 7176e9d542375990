"""Class separability J = tr(S_B) / tr(S_W) of FG/BG pixel features (paper Appendix D,
Eqs. 4-6, after Duda et al.): S_W sums the scatter of each class around its mean, S_B
weights each class mean's offset from the global mean by the class size n_i. Traces only,
so it costs O(N C) without forming C x C matrices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pixelcam.metrics.pxap import IGNORE, to_numpy


def separability_index(features: Any, labels: Any) -> float:
    """J of features ``[N, C]`` with labels ``[N]`` in {0, 1}; NaN when a class is absent,
    inf when both classes are points (zero within-class scatter)."""
    x = to_numpy(features).astype(np.float64)
    y = to_numpy(labels).ravel()
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"features must be [N, C] with N labels, got {x.shape} and {y.shape}")
    m = x.mean(axis=0) if len(x) else None
    s_w = s_b = 0.0
    for c in (0, 1):
        xc = x[y == c]
        if len(xc) == 0:
            return float("nan")
        mc = xc.mean(axis=0)
        s_w += float(((xc - mc) ** 2).sum())
        s_b += float(len(xc) * ((mc - m) ** 2).sum())
    if s_w == 0.0:
        return float("inf") if s_b > 0 else float("nan")
    return s_b / s_w


def feature_map_separability(feature_map: Any, mask: Any, ignore: int = IGNORE) -> float:
    """J of the pixels of a feature map ``[C, h, w]`` labelled by a mask ``[H, W]``.

    The mask is brought to feature resolution by nearest-neighbour sampling at the
    feature cells' centres (``ignore`` pixels are left out)."""
    f = to_numpy(feature_map).astype(np.float64)
    mk = to_numpy(mask)
    c, h, w = f.shape
    rows = np.minimum(((np.arange(h) + 0.5) * mk.shape[0] / h).astype(int), mk.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * mk.shape[1] / w).astype(int), mk.shape[1] - 1)
    small = mk[np.ix_(rows, cols)].ravel()
    keep = small != ignore
    return separability_index(f.reshape(c, -1).T[keep], small[keep])
