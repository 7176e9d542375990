"""The tissue rule, on generated thumbnails: white glass with tissue blobs."""

from __future__ import annotations

import numpy as np
import pytest

from pixelcam.data.synthetic import generate_tile
from pixelcam.errors import InputError
from pixelcam.slide import TileGrid, read_thumbnail, tile_tissue_fractions, tissue_mask


def _glass(shape=(200, 300), seed=0) -> np.ndarray:
    """Slightly noisy near-white glass."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(242, 3, (*shape, 3)), 0, 255).astype(np.uint8)


def _disc(shape, cy, cx, radius) -> np.ndarray:
    yy, xx = np.indices(shape)
    return (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2


def test_an_he_blob_on_glass_is_found():
    image = _glass()
    blob = _disc(image.shape[:2], 100, 120, 60)
    tissue, _ = generate_tile(1, image.shape[:2], seed=2)
    image[blob] = tissue[blob]
    mask = tissue_mask(image)
    iou = (mask & blob).sum() / (mask | blob).sum()
    assert iou > 0.95
    assert mask[:, 250:].sum() == 0  # the glass stays background


def test_empty_glass_has_no_tissue():
    assert tissue_mask(_glass(seed=3)).sum() == 0
    assert tissue_mask(np.full((50, 50, 3), 255, np.uint8)).sum() == 0


def test_pale_grey_tissue_is_found_by_the_not_white_rule():
    image = _glass()
    blob = _disc(image.shape[:2], 100, 150, 50)
    image[blob] = (190, 190, 190)  # no saturation at all
    mask = tissue_mask(image)
    assert (mask == blob).mean() > 0.99


def test_black_empty_tiles_are_not_tissue_and_specks_are_removed():
    image = _glass()
    image[:64, :64] = 0  # a never-written (sparse) tile reads as zeros
    image[150:152, 200:202] = (120, 40, 120)  # a 4-pixel speck of dust
    blob = _disc(image.shape[:2], 120, 100, 40)
    image[blob] = (170, 90, 160)
    image[120, 100] = (242, 242, 242)  # a one-pixel hole inside the tissue
    mask = tissue_mask(image, min_object=16)
    assert mask[:64, :64].sum() == 0
    assert mask[145:157, 195:207].sum() == 0
    assert mask[120, 100]
    assert (mask == blob).mean() > 0.99
    assert tissue_mask(image, min_object=0)[150:152, 200:202].all()  # no cleanup: kept


def test_tissue_mask_rejects_non_rgb():
    with pytest.raises(InputError, match="uint8 RGB"):
        tissue_mask(np.zeros((10, 10), np.uint8))


def test_tile_fractions_match_the_mask_tile_by_tile():
    mask = np.zeros((100, 160), bool)
    mask[10:60, 20:100] = True
    grid = TileGrid.from_shape((200, 320), tile=64, overlap=16)  # the mask is at scale 1/2
    fractions = tile_tissue_fractions(mask, grid, 0.5)
    assert fractions.shape == (grid.rows, grid.cols)
    for r, c in grid:
        y0, y1, x0, x1 = grid.box(r, c)
        expected = mask[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2].mean()
        assert fractions[r, c] == pytest.approx(expected)
    assert fractions.max() == 1.0 and fractions.min() == 0.0


def test_read_thumbnail_takes_the_smallest_level_within_the_factor():
    base = np.zeros((1024, 1024, 3), np.uint8)
    levels = [base, base[::2, ::2], base[::4, ::4], base[::8, ::8]]
    thumb, scale = read_thumbnail(levels, 0, 5)
    assert thumb.shape == (256, 256, 3) and scale == (0.25, 0.25)
    thumb, scale = read_thumbnail(levels, 1, 4)  # relative to level 1
    assert thumb.shape == (128, 128, 3) and scale == (0.25, 0.25)
    thumb, scale = read_thumbnail([base[:, :1000]], 0, 16)  # no pyramid: a strided read
    assert thumb.shape == (64, 63, 3) and scale == (64 / 1024, 63 / 1000)
