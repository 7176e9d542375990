"""Tile grids, blending windows and the row-strip blender."""

from __future__ import annotations

import numpy as np
import pytest

from pixelcam.errors import InputError
from pixelcam.slide import StripBlender, TileGrid, batched, blend_window, window_profile


def test_grid_covers_the_image_with_full_tiles_and_aligns_the_last_one():
    grid = TileGrid.from_shape((1000, 2048, 3), tile=512, overlap=64)
    assert grid.ys == (0, 448, 488) and grid.xs == (0, 448, 896, 1344, 1536)
    assert (grid.tile_h, grid.tile_w) == (512, 512) and len(grid) == 15
    covered = np.zeros((1000, 2048), int)
    for r, c in grid:
        y0, y1, x0, x1 = grid.box(r, c)
        assert 0 <= y0 < y1 <= 1000 and 0 <= x0 < x1 <= 2048
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    assert list(grid)[:3] == [(0, 0), (0, 1), (0, 2)]  # row-major


def test_grid_of_an_exact_fit_and_of_a_small_image():
    exact = TileGrid.from_shape((960, 960), tile=512, overlap=64)
    assert exact.ys == (0, 448) and exact.xs == (0, 448)
    small = TileGrid.from_shape((100, 700), tile=512, overlap=0)
    assert (small.tile_h, small.tile_w) == (100, 512)
    assert small.ys == (0,) and small.xs == (0, 188)


@pytest.mark.parametrize(
    ("shape", "tile", "overlap"),
    [((0, 10), 512, 0), ((100, 100), 8, 0), ((100, 100), 64, 40), ((100, 100), 64, -1)],
)
def test_grid_rejects_bad_arguments(shape, tile, overlap):
    with pytest.raises(InputError):
        TileGrid.from_shape(shape, tile=tile, overlap=overlap)


@pytest.mark.parametrize("kind", ["ramp", "hann"])
def test_windows_cross_fade_to_one_over_the_overlap_and_are_never_zero(kind):
    n, ov = 64, 16
    w = window_profile(n, ov, kind)
    assert w.dtype == np.float32 and w.min() > 0 and w.max() == 1.0
    np.testing.assert_allclose(w[:ov] + w[n - ov :], 1.0, atol=1e-6)  # next tile's rise
    assert np.all(w[ov : n - ov] == 1.0)
    assert np.all(np.diff(w[:ov]) > 0)
    np.testing.assert_array_equal(
        blend_window(n, 32, ov, kind), np.outer(w, window_profile(32, ov, kind))
    )


def test_flat_window_and_unknown_window():
    assert np.all(window_profile(10, 4, "flat") == 1.0)
    assert np.all(window_profile(10, 0, "hann") == 1.0)
    with pytest.raises(InputError, match="gauss"):
        window_profile(10, 2, "gauss")


def _crops_blended(image, grid, keep=None, flush_every=1, window="hann"):
    """Blend the crops of ``image`` tile by tile, emitting as a predictor would."""
    blender = StripBlender(grid, ["a", "b"], window=window, keep=keep)
    jobs = [(r, c) for r, c in grid if keep is None or keep[r, c]]
    rows, capacity = [], 0
    for i, (r, c) in enumerate(jobs):
        y0, y1, x0, x1 = grid.box(r, c)
        blender.add(r, c, {"a": image[y0:y1, x0:x1], "b": 1.0 - image[y0:y1, x0:x1]})
        capacity = max(capacity, blender.capacity)
        if (i + 1) % flush_every == 0:
            until = grid.ys[jobs[i + 1][0]] if i + 1 < len(jobs) else grid.height
            out = blender.emit(until)
            if out is not None:
                rows.append(out)
    last = blender.emit(grid.height)
    if last is not None:
        rows.append(last)
    assert blender.emit(grid.height) is None  # every row comes exactly once
    a = np.concatenate([r["a"] for r in rows])
    b = np.concatenate([r["b"] for r in rows])
    return a, b, capacity


@pytest.mark.parametrize("flush_every", [1, 3, 7])
@pytest.mark.parametrize("window", ["hann", "ramp", "flat"])
def test_blending_the_crops_of_an_image_gives_the_image_back(flush_every, window):
    rng = np.random.default_rng(0)
    image = rng.random((300, 230)).astype(np.float32)
    grid = TileGrid.from_shape(image.shape, tile=64, overlap=16)
    a, b, _ = _crops_blended(image, grid, flush_every=flush_every, window=window)
    assert a.shape == image.shape
    np.testing.assert_allclose(a, image, atol=1e-5)
    np.testing.assert_allclose(b, 1.0 - image, atol=1e-5)


def test_pixels_of_skipped_tiles_are_zero_and_the_rest_exact():
    rng = np.random.default_rng(1)
    image = rng.random((256, 256)).astype(np.float32) + 0.5
    grid = TileGrid.from_shape(image.shape, tile=64, overlap=16)
    keep = np.ones((grid.rows, grid.cols), bool)
    keep[1:3, 1:3] = False
    keep[4, :] = False  # a whole tile row skipped
    a, _, _ = _crops_blended(image, grid, keep=keep, flush_every=2)
    covered = np.zeros(image.shape, bool)
    for r, c in grid:
        if keep[r, c]:
            y0, y1, x0, x1 = grid.box(r, c)
            covered[y0:y1, x0:x1] = True
    assert (~covered).sum() > 1000
    assert np.all(a[~covered] == 0)
    np.testing.assert_allclose(a[covered], image[covered], atol=1e-5)


def test_the_blender_holds_a_band_whose_height_does_not_grow_with_the_image():
    caps = []
    for height in (512, 4096):
        image = np.zeros((height, 96), np.float32)
        grid = TileGrid.from_shape(image.shape, tile=64, overlap=16)
        caps.append(_crops_blended(image, grid, flush_every=1)[2])
    assert caps[0] == caps[1] <= 64 + 48  # tile rows overlap: a tile and a stride


def test_tiles_must_come_as_announced():
    grid = TileGrid.from_shape((200, 64), tile=64, overlap=16)
    keep = np.ones((grid.rows, 1), bool)
    keep[1] = False
    blender = StripBlender(grid, ["a"], keep=keep)
    one = {"a": np.ones((64, 64))}
    blender.add(0, 0, one)
    with pytest.raises(InputError, match="twice"):
        blender.add(0, 0, one)
    with pytest.raises(InputError, match="not one of the tiles"):
        blender.add(1, 0, one)
    with pytest.raises(InputError, match=r"before the tiles \[\(2, 0\)\]"):
        blender.emit(grid.ys[3])
    blender.emit(grid.ys[2])
    blender.add(2, 0, one)
    out = blender.emit(grid.ys[3])["a"]
    assert out.shape == (grid.ys[3] - grid.ys[2], 64)
    with pytest.raises(InputError, match="expected"):
        StripBlender(grid, ["a"]).add(0, 0, {"a": np.ones((32, 64))})
    with pytest.raises(InputError, match="keep"):
        StripBlender(grid, ["a"], keep=np.ones((2, 2), bool))


def test_the_normalised_windows_are_shared_by_tiles_with_the_same_neighbourhood():
    grid = TileGrid.from_shape((1000, 1000), tile=64, overlap=16)
    blender = StripBlender(grid, ["a"])
    for r, c in grid:
        blender.add(r, c, {"a": np.zeros((64, 64))})
        blender.emit(grid.ys[r + 1] if r + 1 < grid.rows and c == grid.cols - 1 else 0)
    assert len(grid) == 441 and len(blender._windows) <= 16  # 4 x 4 kinds of neighbourhood


def test_batched():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 3)) == []
    with pytest.raises(InputError):
        list(batched(range(3), 0))
