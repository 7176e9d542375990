"""Maps of a rectangular region of one level of a large image, tile by tile, for live views.

A viewer shows a small part of a slide at a time. :func:`iter_region_tiles` computes the maps
of just that part: the tiles of the level's fixed :class:`~pixelcam.slide.tiling.TileGrid`
(the same grid as :func:`~pixelcam.slide.predict_slide`: ``tile`` pixels, overlapping by
``overlap``) that intersect the requested box, nearest to the box's centre first. It is a
generator that yields each finished tile (:class:`RegionTile`: its grid key ``(row, col)``,
its box and its raw maps), so a caller can stop at any tile (``close()`` it, or stop
iterating) and lose at most the batch being computed. Because the grid is fixed, a tile's key
names the same pixels whatever the region, so finished tiles can be kept
(:class:`TileCache`) and passed as ``skip`` when the view comes back to them.

**Tissue.** A tile whose tissue fraction is below ``min_tissue`` is not run through the model
and comes back with ``maps=None`` (0 in the blended maps, as in ``predict_slide``). The
fraction is measured with the rule of :func:`~pixelcam.slide.tissue.tissue_mask` on the tile's
own pixels (already read for the model), subsampled to about 32 pixels a side: this costs
about a millisecond, with no thumbnail of the whole level. The Otsu threshold of the rule is
then the tile's own, so a decision can differ from ``predict_slide``'s (one threshold for the
whole slide) on tiles of faint tissue.

**Seams.** :class:`RegionCanvas` blends tiles into the maps of a box as they arrive:
``sum(w * map) / sum(w)`` over the tiles added so far, with the window ``w`` of
:func:`~pixelcam.slide.tiling.blend_window` (``"hann"`` by default). Once every tile
covering a pixel has been added, its value is, to float rounding, the one ``predict_slide``
writes from the same tiles (:class:`~pixelcam.slide.tiling.StripBlender` normalises the same
window by the same tiles); before that it is the blend of the tiles present, so the picture
refines without holes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pixelcam.errors import InputError
from pixelcam.slide.engine import read_tiles, run_batch
from pixelcam.slide.tiling import WINDOWS, TileGrid, blend_window

__all__ = [
    "RegionCanvas",
    "RegionTile",
    "TileCache",
    "iter_region_tiles",
    "region_keys",
    "tile_tissue_fraction",
    "virtual_levels",
]

Box = tuple[int, int, int, int]

#: The model call of :func:`iter_region_tiles`, called with positional arguments only:
#: tests (tests/napari/test_viewport.py) replace it to count or slow the model calls.
_run_model = run_batch


@dataclass(frozen=True)
class RegionTile:
    """One finished tile of a level: ``key`` ``(row, col)`` in the level's grid, ``box``
    ``(y0, y1, x0, x1)`` in level pixels, ``maps`` (name -> float32 ``(y1 - y0, x1 - x0)``
    in [0, 1], not yet blended) or None for a tile skipped as background, and its
    ``tissue`` fraction (1.0 when not measured)."""

    key: tuple[int, int]
    box: Box
    maps: dict[str, np.ndarray] | None
    tissue: float = 1.0

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self.maps.values()) if self.maps else 0


def _check_box(box: Sequence[int], height: int, width: int) -> Box:
    if len(box) != 4:
        raise InputError(f"a region box is (y0, y1, x0, x1), got {tuple(box)}")
    y0, y1, x0, x1 = (int(v) for v in box)
    y0, y1 = max(0, y0), min(height, y1)
    x0, x1 = max(0, x0), min(width, x1)
    if y1 <= y0 or x1 <= x0:
        raise InputError(
            f"region box {tuple(box)} does not intersect the level ({height} x {width} pixels)"
        )
    return y0, y1, x0, x1


def region_keys(grid: TileGrid, box: Sequence[int]) -> list[tuple[int, int]]:
    """Keys ``(row, col)`` of the tiles of ``grid`` that intersect ``box`` ``(y0, y1, x0,
    x1)`` (clipped to the grid's image), nearest to the box's centre first."""
    y0, y1, x0, x1 = _check_box(box, grid.height, grid.width)
    rows = [r for r, ys in enumerate(grid.ys) if ys < y1 and ys + grid.tile_h > y0]
    cols = [c for c, xs in enumerate(grid.xs) if xs < x1 and xs + grid.tile_w > x0]
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2

    def distance(key: tuple[int, int]) -> tuple[float, int, int]:
        ty, tx = grid.ys[key[0]] + grid.tile_h / 2, grid.xs[key[1]] + grid.tile_w / 2
        return (ty - cy) ** 2 + (tx - cx) ** 2, key[0], key[1]

    return sorted(((r, c) for r in rows for c in cols), key=distance)


def tile_tissue_fraction(rgb: np.ndarray, side: int = 32) -> float:
    """Tissue fraction of one RGB ``uint8`` tile by :func:`~pixelcam.slide.tissue.tissue_mask`,
    on the tile subsampled (by striding) to about ``side`` pixels a side."""
    from pixelcam.slide.tissue import tissue_mask

    step = max(1, min(rgb.shape[0], rgb.shape[1]) // int(side))
    return float(tissue_mask(np.ascontiguousarray(rgb[::step, ::step])).mean())


def _groups(
    model: Any, methods: Sequence[str] | None, model_input: Any
) -> tuple[list[str], list[tuple[Any, int | None, list[Any]]]]:
    """Methods grouped by (model, input side): one forward per group and batch."""
    from pixelcam.cams.compute import resolve_methods

    if isinstance(model, Mapping):
        by_method = dict(model)
        names = list(methods) if methods is not None else list(by_method)
        missing = [m for m in names if m not in by_method]
        if missing:
            raise InputError(f"no model given for the maps {missing}")
    else:
        names = list(methods) if methods is not None else ["pixelcam"]
        by_method = dict.fromkeys(names, model)
    if not names:
        raise InputError("no maps requested")
    if len(set(names)) != len(names):
        raise InputError(f"maps listed twice: {names}")
    groups: dict[tuple[int, int | None], tuple[Any, int | None, list[str]]] = {}
    for name in names:
        side = model_input.get(name) if isinstance(model_input, Mapping) else model_input
        if side is not None and int(side) < 16:
            raise InputError(f"model_input must be at least 16 pixels, got {side}")
        side = None if side is None else int(side)
        key = (id(by_method[name]), side)
        groups.setdefault(key, (by_method[name], side, []))[2].append(name)
    out = []
    for mdl, side, group in groups.values():
        out.append((mdl, side, resolve_methods(mdl, group)))
    return names, out


def iter_region_tiles(
    model: Any,
    image: Any,
    box: Sequence[int],
    methods: Sequence[str] | None = None,
    *,
    tile: int = 512,
    overlap: int = 64,
    model_input: int | None | Mapping[str, int | None] = 224,
    batch_size: int = 1,
    min_tissue: float = 0.05,
    skip: Container[tuple[int, int]] = (),
    target: int | None = None,
) -> Iterator[RegionTile]:
    """Maps of the tiles of ``image`` (one level: numpy, dask, zarr... ``(Y, X[, S])``) that
    intersect ``box`` ``(y0, y1, x0, x1)``, one :class:`RegionTile` at a time.

    ``model``: one model for all ``methods`` (default ``("pixelcam",)``), or a mapping
    ``{map name: model}`` (``methods`` then defaults to its keys): the tiles are read once
    and each distinct model runs once per batch. ``tile``/``overlap``: the level's grid
    (:meth:`TileGrid.from_shape`). ``model_input``: side the tiles are resized to (None: the
    tile's own), or a mapping map name -> side. ``batch_size``: tiles per forward (1 lets a
    caller stop after any tile without wasted work). ``min_tissue``: tiles with less tissue
    come back with ``maps=None`` without running the model (0: run every tile). ``skip``:
    keys not to compute (already cached). ``target``: the class class-specific maps explain
    (default: each tile's prediction by each model). Models run where their parameters are.
    Tiles come nearest to the box's centre first (:func:`region_keys`).
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    if not 0.0 <= float(min_tissue) <= 1.0:
        raise InputError(f"min_tissue must be a fraction in [0, 1], got {min_tissue}")
    shape = tuple(image.shape)
    if not (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 2, 3, 4))):
        raise InputError(f"the image has shape {shape}: expected a 2-D gray or RGB(A) image")
    names, groups = _groups(model, methods, model_input)
    grid = TileGrid.from_shape(shape, tile, overlap)
    keys = [k for k in region_keys(grid, box) if k not in skip]
    for start in range(0, len(keys), batch_size):
        batch = keys[start : start + batch_size]
        boxes = [grid.box(r, c) for r, c in batch]
        tiles = read_tiles(image, boxes, "sync")
        fractions = [tile_tissue_fraction(t) if min_tissue > 0 else 1.0 for t in tiles]
        run = [i for i, f in enumerate(fractions) if f >= min_tissue]
        maps: dict[str, np.ndarray] = {}
        if run:
            sub = tiles if len(run) == len(batch) else tiles[run]
            for mdl, side, insts in groups:
                device = next(mdl.parameters()).device
                maps.update(_run_model(mdl, sub, insts, side, device, target))
        for i, key in enumerate(batch):
            tile_maps = None
            if i in run:
                j = run.index(i)
                tile_maps = {n: np.asarray(maps[n][j], np.float32) for n in names}
            yield RegionTile(key, boxes[i], tile_maps, fractions[i])


class RegionCanvas:
    """Blended maps of ``box`` of a level, refined as tiles arrive (module docstring).

    ``grid``: the level's tile grid; ``box`` ``(y0, y1, x0, x1)`` in level pixels (clipped
    to the level); ``names``: the maps; ``window``: :data:`~pixelcam.slide.tiling.WINDOWS`.
    ``maps[name]`` is a float32 array of the box's shape, updated in place by :meth:`add`.
    """

    def __init__(
        self, grid: TileGrid, box: Sequence[int], names: Sequence[str], window: str = "hann"
    ) -> None:
        if window not in WINDOWS:
            raise InputError(f"unknown blending window {window!r}; choose one of {WINDOWS}")
        if not names:
            raise InputError("a region canvas needs at least one map name")
        self.grid = grid
        self.box = _check_box(box, grid.height, grid.width)
        self.names = list(names)
        h, w = self.box[1] - self.box[0], self.box[3] - self.box[2]
        self._w = blend_window(grid.tile_h, grid.tile_w, grid.overlap, window)
        self._den = np.zeros((h, w), np.float32)
        self._num = {n: np.zeros((h, w), np.float32) for n in self.names}
        self.maps = {n: np.zeros((h, w), np.float32) for n in self.names}
        self.keys: set[tuple[int, int]] = set()

    @property
    def shape(self) -> tuple[int, int]:
        return self._den.shape

    def add(self, tile: RegionTile) -> tuple[slice, slice] | None:
        """Blend ``tile`` in; returns the slices of :attr:`maps` that changed (None: none,
        because the tile is outside the box, was added before, or is background)."""
        if tile.key in self.keys:
            return None
        ty0, ty1, tx0, tx1 = tile.box
        by0, by1, bx0, bx1 = self.box
        y0, y1, x0, x1 = max(ty0, by0), min(ty1, by1), max(tx0, bx0), min(tx1, bx1)
        if y1 <= y0 or x1 <= x0:
            return None
        self.keys.add(tile.key)
        if tile.maps is None:
            return None
        missing = [n for n in self.names if n not in tile.maps]
        if missing:
            raise InputError(f"tile {tile.key} has no maps {missing}")
        src = (slice(y0 - ty0, y1 - ty0), slice(x0 - tx0, x1 - tx0))
        dst = (slice(y0 - by0, y1 - by0), slice(x0 - bx0, x1 - bx0))
        w = self._w[src]
        den = self._den[dst]
        den += w
        for name in self.names:
            m = np.asarray(tile.maps[name], np.float32)
            if m.shape != self._w.shape:
                raise InputError(
                    f"map {name!r} of tile {tile.key} is {m.shape}, expected {self._w.shape}"
                )
            num = self._num[name][dst]
            num += w * m[src]
            np.divide(num, den, out=self.maps[name][dst], where=den > 0)
        return dst


class TileCache:
    """Finished tiles by key (any hashable, e.g. ``(level, row, col)``), least recently used
    dropped first once their maps take more than ``max_bytes``; background tiles (no maps)
    cost nothing and are kept."""

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self._tiles: OrderedDict[Hashable, RegionTile] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._tiles)

    def __contains__(self, key: object) -> bool:
        return key in self._tiles

    def __iter__(self) -> Iterator[Hashable]:
        return iter(list(self._tiles))

    def keys(self) -> list[Hashable]:
        return list(self._tiles)

    def get(self, key: Hashable) -> RegionTile | None:
        tile = self._tiles.get(key)
        if tile is not None:
            self._tiles.move_to_end(key)
        return tile

    def put(self, key: Hashable, tile: RegionTile) -> None:
        old = self._tiles.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
        self._tiles[key] = tile
        self.nbytes += tile.nbytes
        while self.nbytes > self.max_bytes and len(self._tiles) > 1:
            for k, t in self._tiles.items():
                if t.nbytes and k != key:
                    del self._tiles[k]
                    self.nbytes -= t.nbytes
                    break
            else:
                break

    def clear(self) -> None:
        self._tiles.clear()
        self.nbytes = 0


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def virtual_levels(image: Any, min_side: int = 512) -> list[Any]:
    """``[image, image[::2, ::2], image[::4, ::4], ...]`` down to a side of ``min_side``: a
    pyramid by striding for an image that has none (no copy for numpy; dask reads the chunks
    it needs). Striding keeps level-0 pixel ``k * i`` as pixel ``i`` of the level ``k``."""
    levels = [image]
    k = 2
    while max(_ceil_div(int(image.shape[0]), k), _ceil_div(int(image.shape[1]), k)) >= min_side:
        levels.append(image[::k, ::k])
        k *= 2
    return levels
