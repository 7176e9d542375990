"""t-SNE embeddings of FG/BG feature-map pixels and their separability J (paper App. D, Fig. 4).

A feature map ``[C, h, w]`` (the last backbone map, input of every head) is coarser than the
image. Pixel labels are brought to that grid either from a mask (majority vote of the mask
pixels inside each cell) or from point annotations (the cells the points fall in), then
:func:`embed_pixels` embeds the labelled cells in 2-D and reports J = tr(S_B) / tr(S_W) over
all of them. Cell ``(r, c)`` covers image pixels whose centres fall in it; its centre is at
:func:`feature_cell_centres` in image pixel coordinates (napari's data coordinates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pixelcam.errors import InputError
from pixelcam.metrics.separability import separability_index

IGNORE = 255
#: fewest labelled feature pixels per class for a meaningful J and embedding
MIN_PIXELS_PER_CLASS = 5


@dataclass
class PixelEmbedding:
    """2-D embedding of labelled feature pixels.

    ``xy`` ``[N, 2]`` t-SNE coordinates, ``labels`` ``[N]`` (0 = background, 1 = foreground),
    ``rows``/``cols`` ``[N]`` the feature-grid cell of each point, ``j`` the separability of
    ALL labelled pixels (not only the embedded subsample), ``counts`` = (#BG, #FG) labelled
    pixels, ``feature_hw`` the grid size.
    """

    xy: np.ndarray
    labels: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    j: float
    counts: tuple[int, int] = (0, 0)
    feature_hw: tuple[int, int] = (0, 0)


def _hw(value: Any, name: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in tuple(value)[:2])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be (height, width), got {value!r}") from exc
    if h < 1 or w < 1:
        raise InputError(f"{name} must be positive, got {(h, w)}")
    return h, w


def _cells(n_in: int, n_out: int) -> np.ndarray:
    """Cell index of each of ``n_in`` pixels on an ``n_out`` grid (pixel centre rule)."""
    return (2 * np.arange(n_in, dtype=np.int64) + 1) * n_out // (2 * n_in)


def pixel_labels_from_mask(
    mask: Any, feature_hw: Any, ignore: int = IGNORE, rule: str = "majority"
) -> np.ndarray:
    """Labels ``[h, w]`` ``uint8`` of a feature grid from a mask ``[H, W]`` over the same extent.

    Mask values: 0 = background, ``ignore`` (255) = unknown, any other value = foreground
    (so instance-numbered masks work). ``rule="majority"``: each cell takes the majority of
    the known mask pixels whose centres fall in it (a tie or no known pixel gives
    ``ignore``). ``rule="nearest"``: each cell takes the mask pixel at its centre, exactly
    as :func:`pixelcam.metrics.feature_map_separability` does (so J matches it). A mask
    smaller than the grid always uses ``nearest``.
    """
    if rule not in ("majority", "nearest"):
        raise InputError(f"rule must be 'majority' or 'nearest', got {rule!r}")
    m = np.asarray(mask)
    if m.ndim != 2 or min(m.shape) < 1:
        raise InputError(f"mask must be a 2-D (H, W) array, got shape {m.shape}")
    h, w = _hw(feature_hw, "feature_hw")
    H, W = m.shape
    if rule == "nearest" or h > H or w > W:  # the mask pixel at each cell centre
        rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(int), H - 1)
        cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(int), W - 1)
        small = m[np.ix_(rows, cols)]
        out = np.where(small == ignore, ignore, (small != 0).astype(np.uint8))
        return out.astype(np.uint8)
    known = m != ignore
    fg = known & (m != 0)
    # every cell holds >= 1 pixel centre here, so reduceat's start indices are increasing
    r0 = np.searchsorted(_cells(H, h), np.arange(h))
    c0 = np.searchsorted(_cells(W, w), np.arange(w))

    def count(a: np.ndarray) -> np.ndarray:
        rows = np.add.reduceat(a, r0, axis=0, dtype=np.int64)
        return np.add.reduceat(rows, c0, axis=1, dtype=np.int64)

    n_known, n_fg = count(known), count(fg)
    out = np.full((h, w), ignore, dtype=np.uint8)
    out[2 * n_fg > n_known] = 1
    out[(2 * n_fg < n_known) & (n_known > 0)] = 0
    return out


def pixel_labels_from_points(
    coords: Any, labels: Any, image_hw: Any, feature_hw: Any, ignore: int = IGNORE
) -> np.ndarray:
    """Labels ``[h, w]`` ``uint8`` of a feature grid from labelled points.

    ``coords`` ``[N, 2]`` (row, col) in image pixel coordinates (pixel centres at integers),
    ``labels`` ``[N]`` 0/1 (other values, e.g. 255 = uncertain, are skipped). A cell takes
    the majority label of the points inside it (a tie gives ``ignore``); cells without points
    and points outside the image are ``ignore``.
    """
    c = np.asarray(coords, dtype=np.float64)
    lab = np.asarray(labels).ravel()
    if c.ndim != 2 or c.shape[1] < 2:
        raise InputError(f"coords must be [N, 2] (row, col), got shape {c.shape}")
    if len(lab) != len(c):
        raise InputError(f"{len(c)} points but {len(lab)} labels")
    c = c[:, -2:]  # extra leading dims (a napari 3-D points layer): keep row, col
    H, W = _hw(image_hw, "image_hw")
    h, w = _hw(feature_hw, "feature_hw")
    lab = np.array([int(v) if _is_01(v) else -1 for v in lab], dtype=np.int64)
    row = np.floor((c[:, 0] + 0.5) * h / H)
    col = np.floor((c[:, 1] + 0.5) * w / W)
    ok = (lab >= 0) & np.isfinite(row) & np.isfinite(col)
    ok &= (row >= 0) & (row < h) & (col >= 0) & (col < w)
    cell = row[ok].astype(np.int64) * w + col[ok].astype(np.int64)
    n = np.bincount(cell, minlength=h * w)
    n_fg = np.bincount(cell, weights=lab[ok], minlength=h * w)
    out = np.full(h * w, ignore, dtype=np.uint8)
    out[2 * n_fg > n] = 1
    out[(2 * n_fg < n) & (n > 0)] = 0
    return out.reshape(h, w)


def _is_01(v: Any) -> bool:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return f in (0.0, 1.0)


def feature_cell_centres(rows: Any, cols: Any, feature_hw: Any, image_hw: Any) -> np.ndarray:
    """Centres ``[N, 2]`` (row, col) of feature-grid cells in image pixel coordinates.

    The image spans ``[-0.5, H - 0.5]`` (pixel centres at integers, napari's convention), so
    cell ``r`` of ``h`` is centred at ``(r + 0.5) * H / h - 0.5``.
    """
    h, w = _hw(feature_hw, "feature_hw")
    H, W = _hw(image_hw, "image_hw")
    r = (np.asarray(rows, dtype=np.float64) + 0.5) * H / h - 0.5
    c = (np.asarray(cols, dtype=np.float64) + 0.5) * W / w - 0.5
    return np.stack([r, c], axis=-1)


def _subsample(labels: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``max_points`` items, stratified by class (each class keeps its
    share, and at least ``MIN_PIXELS_PER_CLASS`` when it has them), sorted."""
    n = len(labels)
    if n <= max_points:
        return np.arange(n)
    groups = [np.flatnonzero(labels == k) for k in (0, 1)]
    quota = [min(len(g), max(MIN_PIXELS_PER_CLASS, round(max_points * len(g) / n))) for g in groups]
    big = int(quota[1] > quota[0])  # rounding error goes to (or comes from) the larger class
    quota[big] = min(len(groups[big]), max_points - quota[1 - big])
    picked = [rng.choice(g, size=q, replace=False) for g, q in zip(groups, quota)]
    return np.sort(np.concatenate(picked))


def embed_pixels(
    features: Any,
    labels: Any,
    max_points: int = 1500,
    seed: int = 0,
    perplexity: float = 30.0,
    threads: int | None = None,
) -> PixelEmbedding:
    """t-SNE of the FG/BG-labelled pixels of a feature map, and their separability J.

    ``features`` ``[C, h, w]``, ``labels`` ``[h, w]`` (0 = BG, 1 = FG, anything else is left
    out). J is computed on ALL labelled pixels; the embedding on a seeded, class-stratified
    subsample of at most ``max_points`` (t-SNE is O(N log N) but still seconds per thousand
    points). Raises :class:`InputError` when a class has fewer than
    ``MIN_PIXELS_PER_CLASS`` labelled pixels. ``threads``: OpenMP threads for t-SNE during
    this call only (``threadpoolctl``, scoped to the calling thread); None = the default.
    One thread can be much faster on a busy machine or right after a torch forward pass in
    the same thread (torch and scikit-learn each ship a libgomp whose threads spin-wait).

    The embedding is scikit-learn's :class:`~sklearn.manifold.TSNE` (``init="pca"``,
    ``random_state=seed``, perplexity capped at ``(N - 1) / 3`` so small images work), not a
    hand-written one: it is the reference Barnes-Hut implementation (perplexity calibration
    by binary search, early exaggeration, PCA initialisation) that readers of the paper's
    Fig. 4 would reproduce with, it is already a dependency, and a hand-written O(N^2) t-SNE
    would be slower and a source of subtle differences. t-SNE is only a picture; the
    number to compare models by is J.
    """
    f = np.asarray(features)
    lab = np.asarray(labels)
    if f.ndim != 3:
        raise InputError(f"features must be [C, h, w], got shape {f.shape}")
    if lab.shape != f.shape[1:]:
        raise InputError(f"labels {lab.shape} do not match the feature grid {f.shape[1:]} (h, w)")
    if int(max_points) < 2 * MIN_PIXELS_PER_CLASS:
        raise InputError(f"max_points must be >= {2 * MIN_PIXELS_PER_CLASS}, got {max_points}")
    if not perplexity > 0:
        raise InputError(f"perplexity must be > 0, got {perplexity}")
    h, w = lab.shape
    rows, cols = np.nonzero((lab == 0) | (lab == 1))
    y = lab[rows, cols].astype(np.uint8)
    counts = (int((y == 0).sum()), int((y == 1).sum()))
    for name, k in (("background", counts[0]), ("foreground", counts[1])):
        if k < MIN_PIXELS_PER_CLASS:
            raise InputError(
                f"only {k} {name} pixel(s) are labelled on the {h}x{w} feature grid; need at "
                f"least {MIN_PIXELS_PER_CLASS} of each class (label more of the image, or use a "
                "larger model input size)"
            )
    x = f[:, rows, cols].T.astype(np.float32)  # [N, C]
    if not np.isfinite(x).all():
        raise InputError("the feature map contains NaN or infinite values")
    j = separability_index(x, y)

    keep = _subsample(y, int(max_points), np.random.default_rng(seed))
    x, y, rows, cols = x[keep], y[keep], rows[keep], cols[keep]
    from sklearn.manifold import TSNE

    perp = float(min(perplexity, (len(x) - 1) / 3.0))
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perp)
    if threads is None:
        xy = tsne.fit_transform(x)
    else:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=max(1, int(threads)), user_api="openmp"):
            xy = tsne.fit_transform(x)
    return PixelEmbedding(
        xy=np.asarray(xy, dtype=np.float32),
        labels=y,
        rows=rows.astype(np.int64),
        cols=cols.astype(np.int64),
        j=float(j),
        counts=counts,
        feature_hw=(int(h), int(w)),
    )
