"""PxAP (pixel average precision), exactly as the reference ``MaskEvaluator`` of Choe et al.
(CVPR 2020, wsolevaluation), as used by the PixelCAM paper.

- Maps are min-max normalised per map as the reference ``normalize_scoremap`` (in the map's
  own float precision, so float32 maps give bit-identical scores; a constant map or one
  with a NaN or inf becomes all zeros). Masks are 1 = foreground, 0 = background,
  255 = ignore (excluded); any other mask value is an error.
- Thresholds ``np.arange(0, 1, 0.001)``; histogram bin edges are the thresholds plus
  ``[1, 2, 3]`` (1002 bins, ``np.histogram`` semantics: ``[e_i, e_i+1)``, last bin closed).
  FG and BG score histograms are accumulated over EVERY pixel of the split: one PR curve
  for the whole set, not a mean of per-image curves.
- ``tp``/``fp`` are reversed cumulative sums of the histograms (the first point has only
  scores >= 2 predicted positive, i.e. nothing for maps in [0, 1]: recall 0);
  precision = tp/(tp+fp), recall = tp/#FG over all points;
  PxAP = 100 * sum_{i>=1} precision[i] * (recall[i] - recall[i-1]), dropping the terms whose
  precision is undefined (tp+fp = 0) AFTER the differences are taken (a rectangle sum).
  Sanity values: a perfect map gives 100, a constant map 100 * #FG / (#FG + #BG).

Only the two histograms are kept, so memory does not grow with the number of images.
Histogramming is ``np.histogram`` with the reference edges, once per batch on the valid
pixels of all its maps (measured faster than ``searchsorted`` or quantise-and-bincount).
"""

from __future__ import annotations

from typing import Any

import numpy as np

THRESHOLDS = np.arange(0, 1, 0.001)
BIN_EDGES = np.append(THRESHOLDS, [1.0, 2.0, 3.0])
NUM_BINS = len(BIN_EDGES) - 1
IGNORE = 255


def to_numpy(x: Any) -> np.ndarray:
    """A numpy array of ``x`` (torch tensors on any device are detached and moved to the CPU;
    half precision becomes float32)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.float16", "torch.bfloat16"):
            x = x.float()
        x = x.numpy()
    x = np.asarray(x)
    if x.dtype == np.float16:
        x = x.astype(np.float32)
    return x


def _float(x: np.ndarray) -> np.ndarray:
    """``x`` as floats, keeping float32/float64 precision (ints and bools become float64)."""
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def normalize_map(cam: Any) -> np.ndarray:
    """Min-max to [0, 1] as the reference ``normalize_scoremap``: NaN/inf or constant -> zeros.

    Computed in the map's own float precision (float32 stays float32, as in the reference).
    """
    return _normalize_batch(_float(to_numpy(cam))[None])[0]


def _normalize_batch(maps: np.ndarray) -> np.ndarray:
    """Per-map min-max of float maps ``[B, H, W]`` (a new array; the input is not modified)."""
    if maps.size == 0:
        return maps.copy()
    axes = tuple(range(1, maps.ndim))
    lo = maps.min(axis=axes, keepdims=True)
    hi = maps.max(axis=axes, keepdims=True)
    bad = ~np.isfinite(lo) | ~np.isfinite(hi) | (lo == hi)  # NaN propagates into min/max
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        out = (maps - lo) / (hi - lo)
    out[np.broadcast_to(bad, out.shape)] = 0
    return out


def score_histogram(scores: Any) -> np.ndarray:
    """Counts of ``scores`` in the reference bins: ``np.histogram(scores, bins=BIN_EDGES)[0]``
    as int64 (scores outside [0, 3] and NaN are not counted)."""
    scores = _float(to_numpy(scores)).ravel()
    scores = scores[np.isfinite(scores)]
    return np.histogram(scores, bins=BIN_EDGES)[0].astype(np.int64)


def _check_mask_values(masks: np.ndarray) -> None:
    if masks.dtype == np.bool_ or masks.size == 0:
        return
    bad = (masks != 0) & (masks != 1) & (masks != IGNORE)
    if bad.any():
        values = np.unique(masks[bad])[:5].tolist()
        raise ValueError(
            f"masks must hold 0 (background), 1 (foreground) or {IGNORE} (ignore), found {values}"
        )


def _check_scores(maps: np.ndarray) -> None:
    """The reference's ``check_scoremap_validity`` for maps that are not normalised here."""
    if np.isnan(maps).any():
        raise ValueError("maps contain NaN (use normalize=True to score them as zeros)")
    if maps.size and (maps.min() < 0 or maps.max() > 1):
        raise ValueError(
            f"maps must lie in [0, 1] when normalize=False, got values in "
            f"[{float(maps.min())!r}, {float(maps.max())!r}]"
        )


def _batch(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(maps [B, H, W] float, masks [B, H, W])`` from a batch or a single ``[H, W]`` pair."""
    maps, masks = to_numpy(maps), to_numpy(masks)
    if maps.shape != masks.shape or maps.ndim not in (2, 3):
        raise ValueError(
            f"maps and masks must both be [B, H, W] (or both [H, W]) of the same shape, got "
            f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)}"
        )
    if maps.ndim == 2:
        maps, masks = maps[None], masks[None]
    _check_mask_values(masks)
    return _float(maps), masks


def _prepare(maps: Any, masks: Any, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    maps, masks = _batch(maps, masks)
    if normalize:
        maps = _normalize_batch(maps)
    else:
        _check_scores(maps)
    return maps, masks


def _ap(fg_hist: np.ndarray, bg_hist: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The reference ``MaskEvaluator.compute``: ``(PxAP, precision, recall)``."""
    num_fg = fg_hist.sum()
    tp = fg_hist[::-1].cumsum()
    fp = bg_hist[::-1].cumsum()
    if num_fg <= 0:
        return float("nan"), np.full(len(tp), np.nan), np.full(len(tp), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / (tp + fp)
    recall = tp / num_fg
    defined = (tp + fp) != 0
    ap = (precision[1:] * np.diff(recall))[defined[1:]].sum()
    return float(100.0 * ap), precision, recall


class PxAPAccumulator:
    """Streaming PxAP over a split: ``update`` batch by batch, then ``compute``.

    State: two int64 histograms of 1002 bins (``fg_hist``, ``bg_hist``), whatever the number
    of images. ``merge`` adds another accumulator's histograms (distributed evaluation).
    """

    def __init__(self, normalize: bool = True) -> None:
        self.normalize = normalize
        self.reset()

    def reset(self) -> None:
        """Forget every pixel seen so far."""
        self.fg_hist = np.zeros(NUM_BINS, dtype=np.int64)
        self.bg_hist = np.zeros(NUM_BINS, dtype=np.int64)

    def update(self, maps: Any, masks: Any) -> None:
        """Add maps ``[B, H, W]`` (or one ``[H, W]``) and masks of the same shape (numpy or
        torch, any device). With ``normalize=False`` maps must already lie in [0, 1]."""
        maps, masks = _prepare(maps, masks, self.normalize)
        self.fg_hist += score_histogram(maps[masks == 1])
        self.bg_hist += score_histogram(maps[masks == 0])

    def merge(self, other: PxAPAccumulator) -> PxAPAccumulator:
        """Add another accumulator's histograms (e.g. from another process); returns self."""
        if other.normalize != self.normalize:
            raise ValueError("cannot merge PxAP accumulators with different normalize settings")
        self.fg_hist += other.fg_hist
        self.bg_hist += other.bg_hist
        return self

    @property
    def num_foreground(self) -> int:
        return int(self.fg_hist.sum())

    @property
    def num_background(self) -> int:
        return int(self.bg_hist.sum())

    def has_data(self) -> bool:
        """True once a foreground pixel has been seen (PxAP is undefined before)."""
        return self.num_foreground > 0

    def compute(self) -> float:
        """PxAP in [0, 100]; NaN when no foreground pixel was seen (the reference raises)."""
        return _ap(self.fg_hist, self.bg_hist)[0]

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(precision, recall, thresholds)`` of the PR curve, 1002 points from the highest
        threshold down: point ``i`` predicts foreground where score >= ``thresholds[i]``
        (thresholds 2, 1, 0.999, ..., 0.001, 0). Precision is NaN where nothing is
        predicted positive; all NaN when no foreground pixel was seen."""
        _, precision, recall = _ap(self.fg_hist, self.bg_hist)
        return precision, recall, BIN_EDGES[::-1][1:].copy()


def pxap(maps: Any, masks: Any, normalize: bool = True) -> float:
    """PxAP of a set of maps ``[B, H, W]`` (or one ``[H, W]``) against masks: one PR curve
    over every pixel of the set. NaN when there is no foreground pixel."""
    acc = PxAPAccumulator(normalize=normalize)
    acc.update(maps, masks)
    return acc.compute()


def per_image_pxap(maps: Any, masks: Any, normalize: bool = True) -> np.ndarray:
    """One PxAP per image ``[B]`` (e.g. for paired t-tests).

    NaN for an image without a foreground pixel (PxAP undefined) and for one without a
    background pixel (PxAP would be 100 whatever the map, so it says nothing about it).
    """
    maps, masks = _prepare(maps, masks, normalize)
    out = np.full(len(maps), np.nan)
    for i, (cam, mask) in enumerate(zip(maps, masks)):
        fg, bg = score_histogram(cam[mask == 1]), score_histogram(cam[mask == 0])
        if fg.sum() > 0 and bg.sum() > 0:
            out[i] = _ap(fg, bg)[0]
    return out
