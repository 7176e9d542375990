"""WSOL metrics computed the paper's way: PxAP, accuracy, pixel rates, separability J, t-test.

Every function and accumulator takes numpy arrays or torch tensors (any device).
"""

from pixelcam.metrics.classification import ClassificationAccumulator, accuracy
from pixelcam.metrics.pixel_rates import PixelRatesAccumulator, pixel_rates
from pixelcam.metrics.pxap import (
    BIN_EDGES,
    IGNORE,
    THRESHOLDS,
    PxAPAccumulator,
    normalize_map,
    per_image_pxap,
    pxap,
    score_histogram,
)
from pixelcam.metrics.separability import feature_map_separability, separability_index
from pixelcam.metrics.stats import paired_ttest

__all__ = [
    "BIN_EDGES",
    "IGNORE",
    "THRESHOLDS",
    "ClassificationAccumulator",
    "PixelRatesAccumulator",
    "PxAPAccumulator",
    "accuracy",
    "feature_map_separability",
    "normalize_map",
    "paired_ttest",
    "per_image_pxap",
    "pixel_rates",
    "pxap",
    "score_histogram",
    "separability_index",
]
