"""Which tiles of a slide hold tissue: a simple rule on a low-resolution level.

The rule (:func:`tissue_mask`), on an RGB thumbnail:

1. **Saturated**: HSV saturation above its Otsu threshold (scikit-image), and above
   ``min_saturation`` so that a slide with no tissue (Otsu splitting the noise of the
   glass) gives no tissue. Stained tissue (H&E, IHC) is coloured, glass is grey-white.
2. **Not near-white**: some channel below ``white_level``: faint, pale tissue that the
   saturation misses (fat, pale stroma, unstained or grey sections).
3. Tissue = (1 OR 2) AND NOT near-black (every channel at most ``black_level``: the zeros of
   never-written slide tiles and black scanner borders).
4. Cleanup: connected tissue pieces of at most ``min_object`` thumbnail pixels (dust,
   specks) are removed, and holes of at most ``min_object`` pixels inside tissue filled.

A tile is processed when the fraction of its area that is tissue is at least ``min_tissue``
(:func:`tile_tissue_fractions` measures it with an integral image of the mask).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pixelcam.errors import InputError
from pixelcam.slide.tiling import TileGrid

__all__ = ["read_thumbnail", "tile_tissue_fractions", "tissue_mask"]


def _remove_small(mask: np.ndarray, max_size: int) -> np.ndarray:
    """``mask`` without its 8-connected pieces of at most ``max_size`` pixels."""
    from scipy import ndimage as ndi

    if max_size < 1 or not mask.any():
        return mask
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes > max_size
    keep[0] = False
    return keep[labels]


def tissue_mask(
    rgb: np.ndarray,
    *,
    white_level: int = 220,
    min_saturation: float = 0.07,
    black_level: int = 10,
    min_object: int = 16,
) -> np.ndarray:
    """Boolean tissue mask of an RGB ``uint8`` thumbnail ``(h, w, 3)`` (see the module doc)."""
    from skimage.filters import threshold_otsu

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"tissue_mask needs a uint8 RGB (h, w, 3) image, got {rgb.dtype} "
                         f"{rgb.shape}")  # fmt: skip
    hi = rgb.max(axis=-1)
    lo = rgb.min(axis=-1)
    sat = (hi - lo).astype(np.float32) / np.maximum(hi, 1).astype(np.float32)  # HSV S
    threshold = float(min_saturation)
    if sat.size > 1 and float(sat.min()) < float(sat.max()):
        threshold = max(threshold, float(threshold_otsu(sat)))
    saturated = sat > threshold
    not_white = lo < white_level
    black = hi <= black_level
    mask = (saturated | not_white) & ~black
    mask = _remove_small(mask, int(min_object))
    holes = _remove_small(~mask, int(min_object))
    return mask | ~holes


def read_thumbnail(
    levels: list[Any], level: int, max_factor: float
) -> tuple[np.ndarray, tuple[float, float]]:
    """A ``uint8`` RGB thumbnail of ``levels[level]`` at most ``max_factor`` times smaller.

    Takes the smallest pyramid level below ``level`` within ``max_factor``; without one
    (a flat file, an array), reads ``levels[level]`` with a stride (dask reads it chunk by
    chunk). Returns the thumbnail and its scale ``(sy, sx)`` (thumbnail pixels per pixel of
    ``level``).
    """
    from pixelcam.data.io import to_rgb_uint8

    base = levels[level]
    best, best_factor = base, 1.0
    for candidate in levels[level + 1 :]:
        factor = base.shape[0] / candidate.shape[0]
        if factor <= max_factor * 1.001 and factor > best_factor:
            best, best_factor = candidate, factor
    step = max(1, int(max_factor // best_factor))
    thumb = best[::step, ::step] if step > 1 else best
    if hasattr(thumb, "compute"):
        thumb = thumb.compute()
    thumb = to_rgb_uint8(np.asarray(thumb), name="slide thumbnail")
    return thumb, (thumb.shape[0] / base.shape[0], thumb.shape[1] / base.shape[1])


def tile_tissue_fractions(
    mask: np.ndarray, grid: TileGrid, scale: float | tuple[float, float]
) -> np.ndarray:
    """Tissue fraction ``[rows, cols]`` of each tile of ``grid``, from a mask at ``scale``.

    ``scale``: mask pixels per pixel of the grid's image, one number or ``(sy, sx)``. A tile
    covers the mask pixels its box touches (at least one).
    """
    sy, sx = (scale, scale) if np.isscalar(scale) else scale
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    integral = np.zeros((h + 1, w + 1), np.int64 if mask.size >= 2**31 else np.int32)
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    out = np.zeros((grid.rows, grid.cols), np.float64)
    for r, c in grid:
        y0, y1, x0, x1 = grid.box(r, c)
        a = min(int(math.floor(y0 * sy)), h - 1)
        b = max(min(int(math.ceil(y1 * sy)), h), a + 1)
        d = min(int(math.floor(x0 * sx)), w - 1)
        e = max(min(int(math.ceil(x1 * sx)), w), d + 1)
        total = integral[b, e] - integral[a, e] - integral[b, d] + integral[a, d]
        out[r, c] = total / ((b - a) * (e - d))
    return out
