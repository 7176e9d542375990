"""Regions of a map: the pixels at or above a threshold as polygons with holes.

:func:`regions_from_map` traces a map held in memory; :func:`trace_bands` traces one read
band of rows at a time (a whole-slide map on disk: memory stays flat with the slide's
height) and joins the regions that cross band seams, so a region is one polygon whatever
the bands. Both give :class:`~pixelcam.geojson.Region` objects in QuPath's level-0 pixel
coordinates (:mod:`pixelcam.geojson`), ready for :func:`~pixelcam.geojson.write_geojson`.

Boundaries follow pixel edges exactly: scikit-image's marching squares at 0.5 on the
thresholded mask, whose diagonal steps cut a pixel corner each (half a pixel per corner,
about 0.01 % of a map's area on smooth maps and several % on speckled ones), get that
corner back, so a polygon's area is its pixel count before simplification. A region is a
4-connected set of pixels (pixels touching at a corner only are two regions); its holes
are the background around which it closes. Shapely repairs the rare ring that touches
itself at a corner (``make_valid``) and simplifies the staircases (``simplify`` map pixels,
topology preserved).

Each region's measurements: ``Area px^2`` (its pixel count, in level-0 pixels), ``Area
µm^2`` (when ``mpp``, the level-0 microns per pixel, is known), ``Threshold``, ``Map
mean`` / ``Map max`` (the map's values inside); its metadata: ``method``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pixelcam.errors import InputError
from pixelcam.geojson import AREA_PX, AREA_UM2, MAP_MAX, MAP_MEAN, THRESHOLD, Region
from pixelcam.validation import check_threshold

__all__ = [
    "BAND_PIXELS",
    "DEFAULT_SIMPLIFY",
    "FOREGROUND_CLASS",
    "FOREGROUND_COLOR",
    "regions_from_map",
    "trace_bands",
]

#: Map pixels read at a time by :func:`trace_bands` (a band of rows of about this many
#: pixels, some 30 bytes each while traced: memory flat with the slide's width too).
BAND_PIXELS = 1 << 22
#: Douglas-Peucker tolerance in map pixels: staircases become lines, areas move < 1 %.
DEFAULT_SIMPLIFY = 1.0
#: The class of a map region (the map's foreground) and its colour: green, which neither
#: eosin, hematoxylin nor DAB uses (PixelCAM's outline colour in the plugin).
FOREGROUND_CLASS = "Foreground"
FOREGROUND_COLOR = (124, 255, 79)
_NAMESPACE = uuid.UUID("6f0b5b8e-4a47-4f0e-9a55-0d9b0c6a1c11")


@dataclass
class _Piece:
    """A region's parts seen so far: polygons (map pixel corners) and value statistics."""

    polygons: list[Any] = field(default_factory=list)
    count: int = 0
    total: float = 0.0
    peak: float = -np.inf

    def add(self, other: _Piece) -> None:
        self.polygons += other.polygons
        self.count += other.count
        self.total += other.total
        self.peak = max(self.peak, other.peak)


def _ring(contour: np.ndarray) -> np.ndarray:
    """The exact pixel-edge ring of a marching-squares contour on a binary mask, as pixel
    corners ``(row, col)`` (pixel centres at integers), one per change of direction.

    The contour's vertices are pixel-edge midpoints; each step between two of them goes
    through one pixel corner: their middle on a straight step, the corner a diagonal step
    cuts (the coordinate of each that lies on a pixel edge) on a diagonal one."""
    a, b = contour[:-1], contour[1:]
    diagonal = (a != b).all(axis=1)[:, None]
    corners = np.where(diagonal, np.where(a % 1 != 0, a, b), (a + b) * 0.5)
    step = np.empty_like(corners)
    step[:-1] = corners[1:] - corners[:-1]
    step[-1] = corners[0] - corners[-1]
    before = np.empty_like(step)
    before[1:], before[0] = step[:-1], step[-1]
    turn = step[:, 0] * before[:, 1] != step[:, 1] * before[:, 0]
    return corners[turn]


def _loops(ring: np.ndarray) -> list[np.ndarray]:
    """A ring that passes a corner twice (where background or foreground pixels meet at a
    corner only) split there into simple loops: shapely reads a self-touching ring as
    invalid, a shell with a hole touching it at that corner as valid."""
    keys = (ring[:, 0] * 2).astype(np.int64) * (1 << 32) + (ring[:, 1] * 2).astype(np.int64)
    if len(np.unique(keys)) == len(keys):
        return [ring]
    loops, path, seen = [], [], {}
    for i, key in enumerate(keys.tolist()):
        if key in seen:
            at = seen[key]
            loops.append(ring[path[at:]])
            for j in path[at + 1 :]:
                seen.pop(int(keys[j]), None)
            del path[at + 1 :]
        else:
            seen[key] = len(path)
            path.append(i)
    loops.append(ring[path])
    return [loop for loop in loops if len(loop) >= 3]


def _signed_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(x[:-1] @ y[1:] - x[1:] @ y[:-1] + x[-1] * y[0] - x[0] * y[-1])


def _owner(contour: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """The foreground pixel beside the first edge of a contour: its region's pixel."""
    r, c = contour[0]
    h, w = mask.shape
    if abs(r - round(r)) > 0.25:  # on a horizontal pixel edge: the pixel above or below
        cands = [(int(np.floor(r)), int(round(c))), (int(np.ceil(r)), int(round(c)))]
    else:
        cands = [(int(round(r)), int(np.floor(c))), (int(round(r)), int(np.ceil(c)))]
    for y, x in cands:
        if 0 <= y < h and 0 <= x < w and mask[y, x]:
            return y, x
    raise AssertionError("a contour without foreground beside it")  # pragma: no cover


def _rectangles(
    labels: np.ndarray, counts: list[int], pieces: list[_Piece], y0: int, scale: tuple
) -> np.ndarray:
    """Regions that fill their bounding box (single pixels, most specks of a noisy map) as
    boxes at once, without tracing; returns which labels they are (index = label)."""
    import shapely
    from scipy import ndimage as ndi

    boxes = np.array(
        [(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in ndi.find_objects(labels)]
    )
    full = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) == np.asarray(counts[1:])
    rect = np.zeros(len(pieces) + 1, bool)
    rect[1:] = full
    sy, sx = scale
    chosen = boxes[full]
    geoms = shapely.box(chosen[:, 1] * sx, (chosen[:, 0] + y0) * sy, chosen[:, 3] * sx,
                        (chosen[:, 2] + y0) * sy)  # fmt: skip
    for k, g in zip(np.flatnonzero(full).tolist(), geoms.tolist()):
        pieces[k].polygons.append(g)
    return rect


def _band_pieces(
    block: np.ndarray, mask: np.ndarray, y0: int, scale: tuple[float, float]
) -> tuple[np.ndarray, list[_Piece]]:
    """The 4-connected regions of one band: their labels and pieces (index = label - 1),
    polygons in level-0 pixel corners (x, y)."""
    import shapely
    from scipy import ndimage as ndi
    from skimage.measure import find_contours

    labels, n = ndi.label(mask)  # 4-connectivity
    if n == 0:
        return labels, []
    flat = labels.ravel()
    counts = np.bincount(flat, minlength=n + 1).tolist()
    totals = np.bincount(flat, weights=block.ravel().astype(np.float64), minlength=n + 1).tolist()
    peaks = np.full(n + 1, -np.inf)
    np.maximum.at(peaks, labels[mask], block[mask])  # no sort (ndimage.maximum sorts)
    peaks = peaks[1:].tolist()
    pieces = [_Piece([], counts[k], totals[k], peaks[k - 1]) for k in range(1, n + 1)]
    shells: dict[int, list[np.ndarray]] = {}
    holes: dict[int, list[np.ndarray]] = {}
    to_xy = np.array([scale[1], scale[0]])
    rect = _rectangles(labels, counts, pieces, y0, scale)
    padded = np.pad(mask & ~rect[labels], 1).astype(np.float32)
    for contour in find_contours(padded, 0.5, fully_connected="low", positive_orientation="high"):
        contour -= 1.0
        label = int(labels[_owner(contour, mask)])
        ring = _ring(contour) + (y0 + 0.5, 0.5)  # pixel centres -> QuPath's corners
        for loop in _loops(ring):
            xy = loop[:, ::-1] * to_xy
            (holes if _signed_area(xy) > 0 else shells).setdefault(label, []).append(xy)
    for label, rings in shells.items():
        inner = holes.get(label, [])
        if len(rings) == 1:
            polygon = shapely.Polygon(rings[0], inner)
        else:  # not expected of a 4-connected region: let shapely sort it out
            outer = shapely.union_all([shapely.Polygon(r) for r in rings])
            polygon = outer.difference(shapely.union_all([shapely.Polygon(r) for r in inner]))
        pieces[label - 1].polygons.append(polygon)
    return labels, pieces


class _Joiner:
    """Joins regions across band seams (4-connected through the seam rows), streaming:
    the regions that touch the last band's bottom row wait; the others are done."""

    def __init__(self) -> None:
        self.waiting: list[_Piece] = []
        self.bottom = np.zeros(0, np.int64)  # per column: 1 + index into waiting, 0 = none

    def add(self, labels: np.ndarray, pieces: list[_Piece], last: bool) -> list[_Piece]:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        nw, n = len(self.waiting), len(pieces)
        links = np.zeros((0, 2), np.int64)
        if nw and n:
            both = (self.bottom > 0) & (labels[0] > 0)
            links = np.unique(
                np.stack([self.bottom[both] - 1, nw + labels[0][both] - 1], 1), axis=0
            )
        graph = coo_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])), shape=(nw + n,) * 2)
        _, group = connected_components(graph, directed=False)
        nodes = self.waiting + pieces
        merged: dict[int, _Piece] = {}
        for k, g in enumerate(group.tolist()):
            merged.setdefault(g, _Piece()).add(nodes[k])
        open_groups: set[int] = set()
        if not last and n:
            open_groups = {int(group[nw + lab - 1]) for lab in np.unique(labels[-1]) if lab > 0}
        order = sorted(open_groups)
        index = {g: i + 1 for i, g in enumerate(order)}
        self.waiting = [merged[g] for g in order]
        self.bottom = np.zeros(labels.shape[1], np.int64)
        if order:
            row = labels[-1]
            fg = row > 0
            self.bottom[fg] = [index[int(group[nw + lab - 1])] for lab in row[fg].tolist()]
        return [p for g, p in merged.items() if g not in open_groups]


def _geometries(pieces: list[_Piece], tolerance: float) -> list[Any]:
    """Finished pieces as one valid polygon each: joined, repaired, simplified."""
    import shapely

    geoms = np.array(
        [p.polygons[0] if len(p.polygons) == 1 else shapely.union_all(p.polygons) for p in pieces],
        dtype=object,
    )
    invalid = ~shapely.is_valid(geoms)
    for k in np.flatnonzero(invalid):
        fixed = shapely.make_valid(geoms[k])
        parts = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type.endswith("Polygon")]
        geoms[k] = shapely.union_all(parts)
    if tolerance > 0:  # small polygons have no staircase worth simplifying
        big = shapely.get_num_coordinates(geoms) > 16
        geoms[big] = shapely.simplify(geoms[big], tolerance, preserve_topology=True)
    return list(geoms)


def _regions(pieces: list[_Piece], info: dict[str, Any]) -> list[Region]:
    """Finished pieces as Regions with their measurements (module docstring)."""
    out = []
    sy, sx = info["scale"]
    method, mpp = info["method"], info["mpp"]
    for piece, geometry in zip(pieces, _geometries(pieces, info["tolerance"])):
        info["count"] += 1
        area_px = piece.count * sx * sy
        measurements = {AREA_PX: area_px}
        if mpp:
            measurements[AREA_UM2] = area_px * mpp**2
        measurements[THRESHOLD] = info["threshold"]
        measurements[MAP_MEAN] = piece.total / piece.count
        measurements[MAP_MAX] = piece.peak
        rid = str(uuid.uuid5(_NAMESPACE, f"{info['seed']}/{method}/{info['count']}"))
        out.append(
            Region(
                geometry,
                info["classification"],
                info["color"],
                "annotation",
                f"{method} region {info['count']}",
                measurements,
                {"method": method},
                rid,
            )  # fmt: skip
        )
    return out


def _scale(scale: float | tuple[float, float]) -> tuple[float, float]:
    sy, sx = (scale, scale) if np.isscalar(scale) else scale  # type: ignore[misc]
    if not (np.isfinite([sy, sx]).all() and sy > 0 and sx > 0):
        raise InputError(f"scale must be positive level-0 pixels per map pixel, got {scale!r}")
    return float(sy), float(sx)


def trace_bands(
    values: Any,
    threshold: float = 0.5,
    *,
    method: str = "map",
    scale: float | tuple[float, float] = 1.0,
    mpp: float | None = None,
    band_rows: int | None = None,
    simplify: float = DEFAULT_SIMPLIFY,
    classification: str = FOREGROUND_CLASS,
    color: tuple[int, int, int] | None = FOREGROUND_COLOR,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[Region]:
    """The regions of ``values >= threshold`` (module docstring), band by band.

    ``values``: a 2-D map (numpy, dask, a memory map, a zarr array...: anything with
    ``shape`` whose row slices ``values[y0:y1]`` read as arrays); ``band_rows`` rows are
    read at a time (default: about :data:`BAND_PIXELS` pixels), and a region is yielded
    once its last row is read. ``scale``: level-0
    pixels per map pixel (one number, or ``(rows, cols)``: a map of pyramid level 2 has 4);
    ``mpp``: level-0 microns per pixel, None when unknown (no area in µm^2); ``simplify``:
    tolerance in map pixels (0 keeps the exact pixel edges). ``progress(rows_done, rows)``
    is called after each band. NaN values are below every threshold.
    """
    threshold = check_threshold(threshold)
    shape = tuple(getattr(values, "shape", ()))
    if len(shape) != 2 or min(shape) < 1:
        raise InputError(f"a map to trace must be 2-D, got shape {shape}")
    band_rows = max(16, BAND_PIXELS // shape[1]) if band_rows is None else band_rows
    if int(band_rows) < 1:
        raise InputError(f"band_rows must be positive, got {band_rows}")
    if mpp is not None and not (np.isfinite(mpp) and mpp > 0):
        raise InputError(f"mpp must be a positive number of microns per pixel, got {mpp!r}")
    sc = _scale(scale)
    info = {"threshold": threshold, "method": method, "mpp": mpp, "count": 0, "scale": sc,
            "tolerance": float(simplify) * (sc[0] + sc[1]) / 2,
            "classification": classification, "color": color, "seed": uuid.uuid4().hex}  # fmt: skip
    joiner = _Joiner()
    height = shape[0]
    for y0 in range(0, height, int(band_rows)):
        y1 = min(height, y0 + int(band_rows))
        block = np.asarray(values[y0:y1], dtype=np.float32)
        mask = np.nan_to_num(block, nan=-np.inf) >= threshold
        labels, pieces = _band_pieces(block, mask, y0, sc)
        done = joiner.add(labels, pieces, last=y1 == height)
        if done:
            yield from _regions(done, info)
        if progress is not None:
            progress(y1, height)


def regions_from_map(values: Any, threshold: float = 0.5, **options: Any) -> list[Region]:
    """The regions of a map in memory: :func:`trace_bands` in one band (same options)."""
    arr = np.asarray(values)
    options.setdefault("band_rows", max(1, arr.shape[0] if arr.ndim else 1))
    return list(trace_bands(arr, threshold, **options))
