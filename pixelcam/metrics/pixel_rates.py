"""Per-pixel confusion rates (the paper's Table 6): TP/FN/TN/FP in % at a threshold.

TP and FN are % of the foreground pixels (TP + FN = 100), TN and FP % of the background
pixels (TN + FP = 100), all pixels of the split pooled. A pixel is predicted foreground
when its (min-max normalised, as for PxAP) map value is >= ``threshold`` (default 0.5:
the paper does not state its threshold).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pixelcam.metrics.pxap import _batch, normalize_map


class PixelRatesAccumulator:
    def __init__(self, threshold: float = 0.5, normalize: bool = True) -> None:
        self.threshold = float(threshold)
        self.normalize = normalize
        self.counts = {"tp": 0, "fn": 0, "tn": 0, "fp": 0}

    def update(self, maps: Any, masks: Any) -> None:
        maps, masks = _batch(maps, masks)
        for cam, mask in zip(maps, masks):
            cam = normalize_map(cam) if self.normalize else np.asarray(cam, np.float64)
            pos = cam >= self.threshold
            fg, bg = mask == 1, mask == 0
            self.counts["tp"] += int((pos & fg).sum())
            self.counts["fn"] += int((~pos & fg).sum())
            self.counts["tn"] += int((~pos & bg).sum())
            self.counts["fp"] += int((pos & bg).sum())

    def compute(self) -> dict[str, float]:
        c = self.counts
        n_fg, n_bg = c["tp"] + c["fn"], c["tn"] + c["fp"]
        nan = float("nan")
        return {
            "tp": 100.0 * c["tp"] / n_fg if n_fg else nan,
            "fn": 100.0 * c["fn"] / n_fg if n_fg else nan,
            "tn": 100.0 * c["tn"] / n_bg if n_bg else nan,
            "fp": 100.0 * c["fp"] / n_bg if n_bg else nan,
        }


def pixel_rates(maps: Any, masks: Any, threshold: float = 0.5) -> dict[str, float]:
    acc = PixelRatesAccumulator(threshold)
    acc.update(maps, masks)
    return acc.compute()
