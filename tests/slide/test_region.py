"""Maps of a region of a level, tile by tile: equal to direct tiles and to the whole-level
blend, stoppable at any tile, cacheable by tile key, background tiles skipped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pixelcam.slide.region as region
from pixelcam.cams import compute_maps
from pixelcam.data.synthetic import generate_tile
from pixelcam.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from pixelcam.errors import InputError
from pixelcam.models import build_model
from pixelcam.slide import StripBlender, TileGrid
from pixelcam.slide.region import (
    RegionCanvas,
    RegionTile,
    TileCache,
    iter_region_tiles,
    region_keys,
    virtual_levels,
)

TILE, OVERLAP = 96, 24  # grid over 360 x 420: rows (0, 72, 144, 216, 264), cols 6


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared, busy machine two threads waiting on each other made
    each forward ~50x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_model("test_resnet", pixel_head="linear").eval()
    with torch.no_grad():  # a random pixel head gives maps near 0.5: spread them
        model.pixel_head.conv.weight.mul_(60.0)
        model.pixel_head.conv.bias.zero_()
    return model


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return generate_tile(1, (360, 420), seed=7)[0]


@pytest.fixture
def calls(monkeypatch) -> list[int]:
    """Tiles per model call."""
    seen: list[int] = []
    real = region._run_model

    def counting(model, tiles, *args):
        seen.append(len(tiles))
        return real(model, tiles, *args)

    monkeypatch.setattr(region, "_run_model", counting)
    return seen


def _direct(model, crop: np.ndarray) -> np.ndarray:
    """The PixelCAM map of one crop, by hand: ImageNet normalisation, one forward."""
    x = torch.from_numpy(crop).permute(2, 0, 1).float()[None] / 255.0
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    res = compute_maps(model, x, ["pixelcam"], size=crop.shape[:2])
    return res.maps["pixelcam"][0].detach().numpy()


def _tiles(model, image, box, **kw) -> list[RegionTile]:
    kw = {"tile": TILE, "overlap": OVERLAP, "model_input": None, "min_tissue": 0.0, **kw}
    return list(iter_region_tiles(model, image, box, ["pixelcam"], **kw))


def test_region_tiles_equal_the_same_tiles_computed_directly(model, image, calls):
    box = (100, 180, 150, 260)
    grid = TileGrid.from_shape(image.shape, TILE, OVERLAP)
    tiles = _tiles(model, image, box)
    keys = [t.key for t in tiles]
    # exactly the grid tiles touching the box, the centre one first
    expected = {
        (r, c)
        for r, c in grid
        if grid.box(r, c)[0] < 180 and grid.box(r, c)[1] > 100
        and grid.box(r, c)[2] < 260 and grid.box(r, c)[3] > 150
    }  # fmt: skip
    assert set(keys) == expected and len(keys) == len(expected) == 6
    assert keys[0] == (1, 2)
    assert len(calls) == 6 and set(calls) == {1}  # one model call per tile
    for t in tiles:
        assert t.box == grid.box(*t.key)
        y0, y1, x0, x1 = t.box
        got = t.maps["pixelcam"]
        assert got.shape == (TILE, TILE) and got.dtype == np.float32
        assert np.abs(got - _direct(model, image[y0:y1, x0:x1])).max() < 1e-4
    assert np.ptp(tiles[0].maps["pixelcam"]) > 0.1  # not a constant map


def test_canvas_of_the_region_equals_the_whole_level_blend(model, image):
    grid = TileGrid.from_shape(image.shape, TILE, OVERLAP)
    everything = {t.key: t for t in _tiles(model, image, (0, 360, 0, 420))}
    blender = StripBlender(grid, ["pixelcam"], window="hann")
    for r, c in grid:
        blender.add(r, c, everything[(r, c)].maps)
    whole = blender.emit(grid.height)["pixelcam"]
    box = (100, 180, 150, 260)
    canvas = RegionCanvas(grid, box, ["pixelcam"])
    region_tiles = _tiles(model, image, box)
    for t in region_tiles[:2]:
        changed = canvas.add(t)
        assert changed is not None
    assert canvas.add(region_tiles[0]) is None  # a tile twice counts once
    for t in region_tiles[2:]:
        canvas.add(t)
    assert canvas.shape == (80, 110)
    assert np.abs(canvas.maps["pixelcam"] - whole[100:180, 150:260]).max() < 1e-5
    # a tile outside the box changes nothing
    assert canvas.add(everything[(4, 5)]) is None


def test_stopping_early_stops_the_model(model, image, calls):
    gen = iter_region_tiles(
        model, image, (0, 360, 0, 420), ["pixelcam"], tile=TILE, overlap=OVERLAP,
        model_input=64, min_tissue=0.0,
    )  # fmt: skip
    first, second = next(gen), next(gen)
    gen.close()
    assert first.key != second.key and len(calls) == 2  # 30 tiles in the region
    assert first.maps["pixelcam"].shape == (TILE, TILE)  # back at the tile's size


def test_cached_tiles_are_not_recomputed_when_the_view_comes_back(model, image, calls):
    grid = TileGrid.from_shape(image.shape, TILE, OVERLAP)
    cache = TileCache()
    first = (0, 150, 0, 150)
    for t in _tiles(model, image, first):
        cache.put(t.key, t)
    n_first = len(calls)
    assert n_first == len(region_keys(grid, first)) == 9
    pan = (0, 150, 100, 250)  # half of it seen already
    new = _tiles(model, image, pan, skip=cache)
    assert {t.key for t in new} == set(region_keys(grid, pan)) - set(cache.keys())
    assert len(calls) - n_first == len(new) == 3
    for t in new:
        cache.put(t.key, t)
    canvas = RegionCanvas(grid, pan, ["pixelcam"])
    for key in region_keys(grid, pan):
        canvas.add(cache.get(key))
    fresh = RegionCanvas(grid, pan, ["pixelcam"])
    for t in _tiles(model, image, pan):
        fresh.add(t)
    assert np.allclose(canvas.maps["pixelcam"], fresh.maps["pixelcam"], atol=1e-6)


def test_background_tiles_are_skipped_without_the_model(model, image, calls):
    rng = np.random.default_rng(0)
    slide = np.clip(rng.normal(243, 3, image.shape), 0, 255).astype(np.uint8)  # glass
    slide[:, :130] = image[:, :130]  # tissue on the left only
    grid = TileGrid.from_shape(slide.shape, TILE, OVERLAP)
    box = (0, 72, 0, 420)  # the top tile row
    tiles = list(
        iter_region_tiles(model, slide, box, ["pixelcam"], tile=TILE, overlap=OVERLAP,
                          model_input=None)
    )  # fmt: skip
    kept = {t.key for t in tiles if t.maps is not None}
    assert kept == {(0, 0), (0, 1)}  # x < 168: the tiles with tissue
    assert len(calls) == 2
    assert all(t.tissue < 0.05 for t in tiles if t.maps is None)
    canvas = RegionCanvas(grid, box, ["pixelcam"])
    for t in tiles:
        canvas.add(t)
    assert np.all(canvas.maps["pixelcam"][:, 200:] == 0.0)  # only background tiles there
    assert canvas.maps["pixelcam"][:, :100].max() > 0.0


def test_several_models_and_input_sizes_share_the_tile_reads(model, image, calls):
    torch.manual_seed(1)
    other = build_model("test_resnet").eval()
    tiles = list(
        iter_region_tiles(
            {"pixelcam": model, "cam": other}, image, (0, 60, 0, 60), tile=TILE,
            overlap=OVERLAP, model_input={"pixelcam": None, "cam": 64}, min_tissue=0.0,
        )
    )  # fmt: skip
    assert len(tiles) == 1 and set(tiles[0].maps) == {"pixelcam", "cam"}
    assert calls == [1, 1]  # one forward per model
    assert tiles[0].maps["cam"].shape == (TILE, TILE)
    with pytest.raises(InputError, match="no model given"):
        next(iter_region_tiles({"cam": other}, image, (0, 9, 0, 9), ["pixelcam"]))


def test_tile_cache_drops_least_recently_used_maps_beyond_its_budget():
    def tile(key):
        return RegionTile(key, (0, 16, 0, 16), {"m": np.zeros((16, 16), np.float32)})

    cache = TileCache(max_bytes=3 * 16 * 16 * 4)
    for k in range(3):
        cache.put((0, 0, k), tile((0, k)))
    cache.put((0, 9, 9), RegionTile((9, 9), (0, 16, 0, 16), None, 0.0))  # background: free
    assert cache.get((0, 0, 0)) is not None  # now most recently used
    cache.put((0, 0, 3), tile((0, 3)))
    assert (0, 0, 1) not in cache and (0, 0, 0) in cache and (0, 9, 9) in cache
    assert len(cache) == 4 and cache.nbytes == 3 * 16 * 16 * 4
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def test_bad_boxes_and_arguments_are_input_errors(model, image):
    grid = TileGrid.from_shape(image.shape, TILE, OVERLAP)
    with pytest.raises(InputError, match="does not intersect"):
        region_keys(grid, (400, 500, 0, 10))
    with pytest.raises(InputError, match=r"\(y0, y1, x0, x1\)"):
        RegionCanvas(grid, (0, 10), ["pixelcam"])
    with pytest.raises(InputError, match="batch_size"):
        next(iter_region_tiles(model, image, (0, 10, 0, 10), batch_size=0))
    with pytest.raises(InputError, match="2-D"):
        next(iter_region_tiles(model, np.zeros((3, 64, 64, 5)), (0, 10, 0, 10)))


def test_virtual_levels_stride_an_image_without_a_pyramid():
    image = np.arange(2100 * 1100).reshape(2100, 1100)
    levels = virtual_levels(image, min_side=512)
    assert [lv.shape for lv in levels] == [(2100, 1100), (1050, 550), (525, 275)]
    assert levels[2][3, 5] == image[12, 20]  # pixel i of level k is pixel 2**k * i
    assert np.shares_memory(levels[1], image)
