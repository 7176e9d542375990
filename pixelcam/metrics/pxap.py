"""PxAP (pixel average precision), exactly as the reference ``MaskEvaluator`` of Choe et al.
(CVPR 2020, wsolevaluation), as used by the PixelCAM paper.

- Maps are min-max normalised per map (a constant or NaN map becomes all zeros), masks
  are 1 = foreground, 0 = background, 255 = ignore (excluded).
- Thresholds ``np.arange(0, 1, 0.001)``; histogram bin edges are the thresholds plus
  ``[1, 2, 3]`` (1002 bins); FG and BG score histograms are accumulated over EVERY pixel of
  the split: one PR curve for the whole set, not a mean of per-image curves.
- ``tp``/``fp`` are reversed cumulative sums of the histograms (the first point predicts
  nothing positive); precision = tp/(tp+fp), recall = tp/#FG over all points;
  PxAP = 100 * sum_{i>=1} precision[i] * (recall[i] - recall[i-1]), dropping the terms whose
  precision is undefined AFTER the differences are taken (a rectangle sum).

Only the two histograms are kept, so memory does not grow with the number of images.
"""

from __future__ import annotations

from typing import Any

import numpy as np

THRESHOLDS = np.arange(0, 1, 0.001)
BIN_EDGES = np.append(THRESHOLDS, [1.0, 2.0, 3.0])
NUM_BINS = len(BIN_EDGES) - 1
IGNORE = 255


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view of ``x`` (torch tensors on any device are moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) in ("torch.float16", "torch.bfloat16"):
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def normalize_map(cam: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] as the reference ``normalize_scoremap``: NaN or constant -> zeros."""
    cam = np.asarray(cam, dtype=np.float64)
    if np.isnan(cam).any():
        return np.zeros_like(cam)
    lo, hi = cam.min(), cam.max()
    if lo == hi:
        return np.zeros_like(cam)
    return (cam - lo) / (hi - lo)


def score_histogram(scores: np.ndarray) -> np.ndarray:
    """``np.histogram(scores, bins=BIN_EDGES)[0]``, bin for bin, via ``searchsorted``."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    scores = scores[(scores >= BIN_EDGES[0]) & (scores <= BIN_EDGES[-1])]
    idx = np.searchsorted(BIN_EDGES, scores, side="right") - 1
    idx[idx == NUM_BINS] = NUM_BINS - 1  # the last bin is closed on the right
    return np.bincount(idx, minlength=NUM_BINS).astype(np.int64)


def _batch(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    maps, masks = to_numpy(maps), to_numpy(masks)
    if maps.ndim == 2:
        maps, masks = maps[None], masks[None] if masks.ndim == 2 else masks
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(
            f"maps and masks must both be [B, H, W] (or [H, W]) of the same shape, got "
            f"{maps.shape} and {masks.shape}"
        )
    return maps, masks


def _ap(fg_hist: np.ndarray, bg_hist: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    num_fg = fg_hist.sum()
    tp = fg_hist[::-1].cumsum()
    fp = bg_hist[::-1].cumsum()
    if num_fg <= 0:
        return float("nan"), np.full(len(tp), np.nan), np.zeros(len(tp))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / (tp + fp)
    recall = tp / num_fg
    defined = (tp + fp) != 0
    ap = (precision[1:] * np.diff(recall))[defined[1:]].sum()
    return float(100.0 * ap), precision, recall


class PxAPAccumulator:
    """Streaming PxAP over a split: ``update`` batch by batch, then ``compute``."""

    def __init__(self, normalize: bool = True) -> None:
        self.normalize = normalize
        self.reset()

    def reset(self) -> None:
        self.fg_hist = np.zeros(NUM_BINS, dtype=np.int64)
        self.bg_hist = np.zeros(NUM_BINS, dtype=np.int64)

    def update(self, maps: Any, masks: Any) -> None:
        """Add maps ``[B, H, W]`` (or ``[H, W]``) and masks of the same shape."""
        maps, masks = _batch(maps, masks)
        for cam, mask in zip(maps, masks):
            cam = normalize_map(cam) if self.normalize else np.asarray(cam, np.float64)
            self.fg_hist += score_histogram(cam[mask == 1])
            self.bg_hist += score_histogram(cam[mask == 0])

    def merge(self, other: PxAPAccumulator) -> PxAPAccumulator:
        """Add another accumulator's histograms (e.g. from another process)."""
        self.fg_hist += other.fg_hist
        self.bg_hist += other.bg_hist
        return self

    def has_data(self) -> bool:
        """True once a foreground pixel has been seen (PxAP is undefined before)."""
        return bool(self.fg_hist.sum() > 0)

    def compute(self) -> float:
        """PxAP in [0, 100]; NaN when no foreground pixel was seen."""
        return _ap(self.fg_hist, self.bg_hist)[0]

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(precision, recall, thresholds)`` of the PR curve, one point per bin edge
        counted from the top (the first point predicts nothing positive)."""
        _, precision, recall = _ap(self.fg_hist, self.bg_hist)
        return precision, recall, BIN_EDGES[::-1][1:]


def pxap(maps: Any, masks: Any, normalize: bool = True) -> float:
    """PxAP of a set of maps against masks (one PR curve over every pixel)."""
    acc = PxAPAccumulator(normalize=normalize)
    acc.update(maps, masks)
    return acc.compute()


def per_image_pxap(maps: Any, masks: Any, normalize: bool = True) -> np.ndarray:
    """One PxAP per image (for paired t-tests); NaN for an image without foreground."""
    maps, masks = _batch(maps, masks)
    return np.array([pxap(m[None], k[None], normalize) for m, k in zip(maps, masks)])
