"""Per-pixel confusion rates (the paper's Table 6, after Rony et al. 2023): TP/FN/TN/FP in %.

A pixel is predicted foreground when its map value, min-max normalised per map as for PxAP
(``normalize=True``), is >= ``threshold`` (the same ``>=`` as PxAP's thresholds). The
paper does not state its threshold; the default is 0.5. All pixels of the split are pooled
(not a mean of per-image rates), and mask pixels equal to 255 are ignored. Denominators:

- TP rate = TP / #FG and FN rate = FN / #FG (so TP + FN = 100),
- TN rate = TN / #BG and FP rate = FP / #BG (so TN + FP = 100),

as in Table 6, where each pair sums to 100. A rate is NaN when its denominator is 0.
"""

from __future__ import annotations

from typing import Any

from pixelcam.metrics.pxap import _prepare

KEYS = ("tp", "fn", "tn", "fp")


class PixelRatesAccumulator:
    """Streaming pixel TP/FN/TN/FP counts; ``compute`` gives the rates in % (module doc)."""

    def __init__(self, threshold: float = 0.5, normalize: bool = True) -> None:
        self.threshold = float(threshold)
        self.normalize = normalize
        self.reset()

    def reset(self) -> None:
        self.counts = dict.fromkeys(KEYS, 0)

    def update(self, maps: Any, masks: Any) -> None:
        """Add maps ``[B, H, W]`` (or one ``[H, W]``) and masks of the same shape (1 = FG,
        0 = BG, 255 = ignore). With ``normalize=False`` maps must lie in [0, 1]."""
        maps, masks = _prepare(maps, masks, self.normalize)
        pos = maps >= self.threshold
        fg, bg = masks == 1, masks == 0
        self.counts["tp"] += int((pos & fg).sum())
        self.counts["fn"] += int((~pos & fg).sum())
        self.counts["tn"] += int((~pos & bg).sum())
        self.counts["fp"] += int((pos & bg).sum())

    def merge(self, other: PixelRatesAccumulator) -> PixelRatesAccumulator:
        """Add another accumulator's counts; returns self."""
        if (other.threshold, other.normalize) != (self.threshold, self.normalize):
            raise ValueError("cannot merge pixel-rate accumulators with different settings")
        for k in KEYS:
            self.counts[k] += other.counts[k]
        return self

    def compute(self) -> dict[str, float]:
        """``{"tp", "fn", "tn", "fp"}`` rates in %: TP, FN over #FG; TN, FP over #BG."""
        c = self.counts
        n_fg, n_bg = c["tp"] + c["fn"], c["tn"] + c["fp"]
        nan = float("nan")
        return {
            "tp": 100.0 * c["tp"] / n_fg if n_fg else nan,
            "fn": 100.0 * c["fn"] / n_fg if n_fg else nan,
            "tn": 100.0 * c["tn"] / n_bg if n_bg else nan,
            "fp": 100.0 * c["fp"] / n_bg if n_bg else nan,
        }


def pixel_rates(
    maps: Any, masks: Any, threshold: float = 0.5, normalize: bool = True
) -> dict[str, float]:
    """TP/FN/TN/FP rates in % of maps against masks, pooled over every pixel (module doc)."""
    acc = PixelRatesAccumulator(threshold, normalize)
    acc.update(maps, masks)
    return acc.compute()
