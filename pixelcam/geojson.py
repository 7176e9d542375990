"""QuPath GeoJSON, both ways: regions out for QuPath, QuPath's annotations in for training.

Coordinates are QuPath's: ``x, y`` in pixels of the full-resolution image (level 0), origin
at the top-left corner of the image, so pixel ``(row i, col j)`` covers ``x in [j, j + 1)``,
``y in [i, i + 1)`` (``pixelcam.annotations`` uses pixel centres: ``row = y - 0.5``).

**Export** (:func:`write_geojson`): a ``FeatureCollection`` as QuPath's *File > Import
objects* reads it (and as its *Export as GeoJSON* writes it)::

    {"type": "Feature", "id": "<uuid>", "geometry": {"type": "Polygon", ...},
     "properties": {"objectType": "annotation", "name": "PixelCAM region 3",
                    "classification": {"name": "Foreground", "color": [124, 255, 79]},
                    "isLocked": false,
                    "measurements": {"Area px^2": 5120.0, "Threshold": 0.5, ...},
                    "metadata": {"method": "pixelcam"}}}

**Import** (:func:`read_geojson`): a ``FeatureCollection``, a list of features (QuPath's
export without the collection option), one ``Feature`` or a bare geometry; Polygon and
MultiPolygon (holes kept), Point and MultiPoint; ``objectType`` (or v0.2's
``object_type`` / legacy ids) annotation, detection, cell (its ``geometry``, the cell
boundary; ``nucleusGeometry`` is ignored), tile; classifications by ``name`` (or derived
``names``, joined by ": ") with ``color`` ``[r, g, b]`` (or v0.2's packed ``colorRGB``);
measurements as a mapping or v0.2's ``[{"name", "value"}]`` list. Files are untrusted:
the size read is bounded, and a bad file raises one :class:`~pixelcam.errors.InputError`
naming it and the feature; self-intersecting polygons are repaired (shapely's
``make_valid``) and parts outside the image clipped, each with one warning
(:class:`GeoJSONWarning`) saying how many.

**Training** from imported annotations: :func:`rasterize` paints polygons into a mask of
the generic folder dataset (``masks/<class>/<stem>.png``, ``> 0`` = foreground; written by
:func:`write_mask`), :func:`to_annotations` turns points into trusted FG/BG
:class:`~pixelcam.annotations.AnnotationSet` points. Class names map to FG/BG by
:data:`DEFAULT_CLASS_LABELS` (case-insensitive), which a ``labels`` argument overrides.
"""

from __future__ import annotations

import json
import math
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pixelcam.annotations import BACKGROUND, FOREGROUND, AnnotationSet
from pixelcam.errors import InputError
from pixelcam.fileio import atomic_write, atomic_write_text, read_text_bounded

__all__ = [
    "AREA_PX",
    "AREA_UM2",
    "DEFAULT_CLASS_LABELS",
    "MAX_FEATURES",
    "MAX_FILE_BYTES",
    "MAP_MAX",
    "MAP_MEAN",
    "THRESHOLD",
    "GeoJSONWarning",
    "Region",
    "class_label",
    "feature_collection",
    "read_geojson",
    "rasterize",
    "to_annotations",
    "write_geojson",
    "write_mask",
]

#: QuPath measurement names of a map region (QuPath's own area names).
AREA_PX, AREA_UM2 = "Area px^2", "Area µm^2"
THRESHOLD, MAP_MEAN, MAP_MAX = "Threshold", "Map mean", "Map max"
#: Bounds of what :func:`read_geojson` reads (a guard against runaway files).
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_FEATURES = 1_000_000
#: Object types of QuPath (``tma_core`` and ``root`` are read as annotations, as QuPath does
#: with types it does not know).
OBJECT_TYPES = ("annotation", "detection", "cell", "tile")
_LEGACY_TYPES = {
    "PathAnnotationObject": "annotation", "PathDetectionObject": "detection",
    "PathCellObject": "cell", "PathTileObject": "tile",
}  # fmt: skip
_SUPPORTED = ("Polygon", "MultiPolygon", "Point", "MultiPoint")
#: Class name (lower case) -> label of the trusted annotations: 1 foreground, 0 background.
#: ``""`` is an unclassified object (an outline drawn around what matters: foreground).
#: QuPath's ``Ignore*`` class marks what a classifier should not learn as tissue
#: (whitespace, background): background here.
DEFAULT_CLASS_LABELS: dict[str, int] = {
    "": FOREGROUND, "foreground": FOREGROUND, "fg": FOREGROUND, "tumor": FOREGROUND,
    "tumour": FOREGROUND, "positive": FOREGROUND, "region": FOREGROUND,
    "background": BACKGROUND, "bg": BACKGROUND, "stroma": BACKGROUND, "other": BACKGROUND,
    "negative": BACKGROUND, "ignore": BACKGROUND, "ignore*": BACKGROUND,
}  # fmt: skip


class GeoJSONWarning(UserWarning):
    """Something of an imported file was repaired, clipped or left out (the message says)."""


@dataclass
class Region:
    """One QuPath object: a polygon region (map regions, annotations, detections, cells) or
    points, in QuPath's pixel coordinates (module docstring).

    ``measurements``: numbers by QuPath's names (a map region: :data:`AREA_PX`,
    :data:`AREA_UM2` when the pixel size is known, :data:`THRESHOLD`, :data:`MAP_MEAN`,
    :data:`MAP_MAX`); ``metadata``: strings (a map region's ``method``).
    """

    geometry: Any
    classification: str | None = None
    color: tuple[int, int, int] | None = None
    object_type: str = "annotation"
    name: str | None = None
    measurements: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def method(self) -> str | None:
        return self.metadata.get("method")

    @property
    def threshold(self) -> float | None:
        return self.measurements.get(THRESHOLD)

    @property
    def area_px(self) -> float | None:
        return self.measurements.get(AREA_PX)

    @property
    def area_um2(self) -> float | None:
        return self.measurements.get(AREA_UM2)

    @property
    def mean(self) -> float | None:
        return self.measurements.get(MAP_MEAN)

    @property
    def max(self) -> float | None:
        return self.measurements.get(MAP_MAX)

    @property
    def is_points(self) -> bool:
        return self.geometry.geom_type in ("Point", "MultiPoint")


# ----------------------------------------------------------------------------------------
# Writing


def _feature(region: Region) -> dict[str, Any]:
    import shapely
    from shapely.geometry import mapping

    geometry = region.geometry
    if not region.is_points:
        geometry = shapely.orient_polygons(geometry)  # RFC 7946's winding, holes reversed
    props: dict[str, Any] = {"objectType": region.object_type}
    if region.name:
        props["name"] = region.name
    if region.classification:
        cls: dict[str, Any] = {"name": region.classification}
        if region.color is not None:
            cls["color"] = [int(c) for c in region.color]
        props["classification"] = cls
    props["isLocked"] = False
    finite = {k: float(v) for k, v in region.measurements.items() if math.isfinite(float(v))}
    if finite:
        props["measurements"] = finite
    if region.metadata:
        props["metadata"] = {str(k): str(v) for k, v in region.metadata.items()}
    return {"type": "Feature", "id": region.id, "geometry": mapping(geometry), "properties": props}


def feature_collection(regions: Iterable[Region]) -> dict[str, Any]:
    """The GeoJSON ``FeatureCollection`` of ``regions`` (a dict for :func:`json.dumps`)."""
    return {"type": "FeatureCollection", "features": [_feature(r) for r in regions]}


def write_geojson(path: str | Path, regions: Iterable[Region]) -> Path:
    """Write ``regions`` as a QuPath GeoJSON ``FeatureCollection``, atomically."""
    text = json.dumps(feature_collection(regions), allow_nan=False, separators=(",", ":"))
    return atomic_write_text(path, text + "\n")


# ----------------------------------------------------------------------------------------
# Reading


def _read_json(path: Path) -> Any:
    text = read_text_bounded(path, "GeoJSON file", MAX_FILE_BYTES)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON (truncated or corrupt?): {exc}") from exc
    except RecursionError as exc:
        raise InputError(f"{path}: JSON nested too deeply") from exc


def _features(doc: Any, where: str) -> list[Any]:
    """The features of a document: a FeatureCollection, a list, a Feature, a geometry."""
    kind = doc.get("type") if isinstance(doc, dict) else None
    if isinstance(doc, list):
        features = doc
    elif kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise InputError(f"{where}: 'features' of the FeatureCollection must be a list")
    elif kind == "Feature":
        features = [doc]
    elif isinstance(kind, str) and "coordinates" in doc:
        features = [{"type": "Feature", "geometry": doc, "properties": {}}]
    else:
        raise InputError(
            f"{where}: expected a GeoJSON FeatureCollection, Feature or geometry, got "
            f"{kind or type(doc).__name__!r}"
        )
    if not features:
        raise InputError(f"{where}: no features (an empty FeatureCollection?)")
    if len(features) > MAX_FEATURES:
        raise InputError(f"{where}: {len(features)} features, more than the limit {MAX_FEATURES}")
    return features


def _positions(value: Any, where: str, ring: bool = False) -> np.ndarray:
    """``(N, 2)`` finite float coordinates of a position list (a third value is dropped)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: coordinates must be lists of numbers [x, y]") from None
    if arr.ndim != 2 or arr.shape[1] < 2 or not len(arr):
        raise InputError(f"{where}: coordinates must be a list of positions [x, y]")
    arr = arr[:, :2]
    if not np.isfinite(arr).all():
        raise InputError(f"{where}: non-finite coordinate (NaN or infinity)")
    if ring and len(np.unique(arr, axis=0)) < 3:
        raise InputError(f"{where}: a polygon ring needs at least 3 distinct points")
    return arr


def _polygon(rings: Any, where: str) -> Any:
    from shapely.geometry import Polygon

    if not isinstance(rings, list) or not rings:
        raise InputError(f"{where}: a Polygon's coordinates must be a non-empty list of rings")
    shell, *holes = (_positions(r, f"{where}, ring {k}", ring=True) for k, r in enumerate(rings))
    return Polygon(shell, holes)


def _geometry(geom: Any, where: str) -> Any:
    from shapely.geometry import MultiPoint, MultiPolygon, Point

    if not isinstance(geom, dict):
        raise InputError(f"{where}: geometry must be an object, got {type(geom).__name__}")
    kind = geom.get("type")
    coords = geom.get("coordinates")
    if kind not in _SUPPORTED:
        raise InputError(
            f"{where}: geometry type {kind!r} is not supported (expected one of "
            f"{', '.join(_SUPPORTED)})"
        )
    if not isinstance(coords, list):
        raise InputError(f"{where}: a {kind} needs a 'coordinates' list")
    if kind == "Point":
        return Point(_positions([coords], where)[0])
    if kind == "MultiPoint":
        return MultiPoint(_positions(coords, where))
    if kind == "Polygon":
        return _polygon(coords, where)
    return MultiPolygon([_polygon(p, f"{where}, polygon {k}") for k, p in enumerate(coords)])


def _rgb(value: Any) -> tuple[int, int, int] | None:
    if isinstance(value, list) and len(value) >= 3:
        try:
            rgb = tuple(int(v) for v in value[:3])
        except (TypeError, ValueError):
            return None
        return rgb if all(0 <= c <= 255 for c in rgb) else None  # type: ignore[return-value]
    if isinstance(value, int) and not isinstance(value, bool):  # v0.2: packed (A)RGB
        return ((value >> 16) & 255, (value >> 8) & 255, value & 255)
    return None


def _classification(props: dict) -> tuple[str | None, tuple[int, int, int] | None]:
    cls = props.get("classification")
    color = _rgb(props.get("color"))
    if isinstance(cls, str):
        return cls or None, color
    if not isinstance(cls, dict):
        return None, color
    name = cls.get("name")
    names = cls.get("names")
    if not isinstance(name, str) and isinstance(names, list):
        name = ": ".join(str(n) for n in names)
    return (name or None) if isinstance(name, str) else None, _rgb(
        cls.get("color", cls.get("colorRGB"))
    ) or color


def _measurements(value: Any) -> dict[str, float]:
    items = value.items() if isinstance(value, dict) else []
    if isinstance(value, list):  # v0.2: [{"name": ..., "value": ...}]
        items = [(m.get("name"), m.get("value")) for m in value if isinstance(m, dict)]
    out = {}
    for k, v in items:
        if isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def _object_type(feature: dict, props: dict) -> str:
    kind = props.get("objectType", props.get("object_type", props.get("type")))
    kind = kind if isinstance(kind, str) else _LEGACY_TYPES.get(str(feature.get("id")), "")
    kind = _LEGACY_TYPES.get(kind, kind).lower()
    return kind if kind in OBJECT_TYPES else "annotation"


def _region(feature: Any, where: str) -> Region | None:
    if not isinstance(feature, dict):
        raise InputError(f"{where}: expected a Feature object, got {type(feature).__name__}")
    if feature.get("geometry") is None:
        return None
    geometry = _geometry(feature["geometry"], where)
    props = feature.get("properties")
    props = props if isinstance(props, dict) else {}
    name, color = _classification(props)
    meta = props.get("metadata")
    metadata = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
    region = Region(
        geometry, name, color, _object_type(feature, props),
        props.get("name") if isinstance(props.get("name"), str) else None,
        _measurements(props.get("measurements")), metadata,
    )  # fmt: skip
    if isinstance(feature.get("id"), str) and feature["id"] not in _LEGACY_TYPES:
        region.id = feature["id"]
    return region


def _repair(regions: list[Region]) -> int:
    """Make invalid polygons valid in place (their polygonal part); how many were."""
    import shapely

    repaired = 0
    for r in regions:
        if r.is_points or r.geometry.is_valid:
            continue
        fixed = shapely.make_valid(r.geometry)
        parts = [g for g in getattr(fixed, "geoms", [fixed]) if g.geom_type.endswith("Polygon")]
        r.geometry = shapely.union_all(parts) if parts else shapely.Polygon()
        repaired += 1
    return repaired


def _clip(regions: list[Region], shape_hw: tuple[int, int], where: str) -> list[Region]:
    """Regions clipped to the image; those entirely outside dropped (an error if all are)."""
    import shapely

    h, w = shape_hw
    frame = shapely.box(0, 0, w, h)
    kept: list[Region] = []
    clipped = 0
    for r in regions:
        if frame.covers(r.geometry):
            kept.append(r)
            continue
        part = r.geometry.intersection(frame)
        if r.is_points:  # the border pixels' far edges are outside
            part = shapely.MultiPoint(
                [p for p in getattr(r.geometry, "geoms", [r.geometry]) if frame.contains(p)]
            )
        if part.is_empty or (not r.is_points and part.area == 0):
            continue
        r.geometry = part
        kept.append(r)
        clipped += 1
    if not kept:
        raise InputError(
            f"{where}: every feature lies outside the image ({w} x {h} pixels): another "
            "image's annotations, or coordinates of another pyramid level?"
        )
    if clipped or len(kept) < len(regions):
        warnings.warn(
            f"{where}: {clipped} feature(s) clipped to the image ({w} x {h} pixels), "
            f"{len(regions) - len(kept)} left out (entirely outside)",
            GeoJSONWarning,
            stacklevel=3,
        )
    return kept


def read_geojson(path: str | Path, image_shape: tuple[int, int] | None = None) -> list[Region]:
    """Read a QuPath (or any) GeoJSON file into :class:`Region` objects (module docstring).

    ``image_shape``: the image's level-0 ``(H, W)``; when given, what lies outside is
    clipped (with a warning) and a file entirely outside is refused. Features without a
    geometry (QuPath's root) are skipped.
    """
    path = Path(path)
    where = str(path)
    features = _features(_read_json(path), where)
    regions = []
    for i, feature in enumerate(features):
        region = _region(feature, f"{where}: feature {i}")
        if region is not None:
            regions.append(region)
    if not regions:
        raise InputError(f"{where}: no feature has a geometry")
    repaired = _repair(regions)
    if repaired:
        warnings.warn(
            f"{where}: repaired {repaired} self-intersecting polygon(s) (shapely make_valid)",
            GeoJSONWarning,
            stacklevel=2,
        )
    regions = [r for r in regions if not r.geometry.is_empty]
    if image_shape is not None:
        regions = _clip(regions, (int(image_shape[0]), int(image_shape[1])), where)
    return regions


# ----------------------------------------------------------------------------------------
# Training data


def class_label(
    classification: str | None, labels: Mapping[str, int] | None = None, default: int = FOREGROUND
) -> int:
    """FG (1) or BG (0) of a class name: ``labels`` (case-insensitive) over
    :data:`DEFAULT_CLASS_LABELS`; a name in neither gets ``default``. A derived class
    (``"Tumor: Positive"``) is looked up whole, then by its first part."""
    table = {**DEFAULT_CLASS_LABELS, **{k.lower(): int(v) for k, v in (labels or {}).items()}}
    name = (classification or "").strip().lower()
    if name in table:
        return table[name]
    return table.get(name.split(":")[0].strip(), default)


def _warn_unknown(regions: Sequence[Region], labels: Mapping[str, int] | None) -> None:
    names = {(r.classification or "") for r in regions}
    unknown = sorted(n for n in names if class_label(n, labels, default=-1) == -1)
    if unknown:
        warnings.warn(
            f"classes {unknown} are not in the FG/BG table: read as foreground (give "
            "labels={name: 0 or 1} to choose)",
            GeoJSONWarning,
            stacklevel=3,
        )


def _fill(polygon: Any, shape_hw: tuple[int, int], downsample: float) -> tuple:
    """The pixels (centres) inside a polygon, holes excluded: ``(rows, cols)``."""
    from skimage.draw import polygon as draw_polygon

    def pixels(ring: Any) -> tuple[np.ndarray, np.ndarray]:
        xy = np.asarray(ring.coords) / downsample - 0.5  # corner -> centre convention
        return draw_polygon(xy[:, 1], xy[:, 0], shape_hw)

    rows, cols = pixels(polygon.exterior)
    if not polygon.interiors:
        return rows, cols
    h, w = shape_hw
    inside = np.zeros(h * w, bool)
    inside[rows * w + cols] = True
    for hole in polygon.interiors:
        r, c = pixels(hole)
        inside[r * w + c] = False
    flat = np.flatnonzero(inside)
    return flat // w, flat % w


def rasterize(
    regions: Sequence[Region],
    shape_hw: tuple[int, int],
    *,
    downsample: float = 1.0,
    labels: Mapping[str, int] | None = None,
) -> np.ndarray:
    """A ``uint8 (H, W)`` mask, 1 where a pixel's centre lies in a foreground polygon and in
    no background one (:func:`class_label`), else 0; holes are respected, points left out.
    ``downsample``: level-0 pixels per mask pixel (a mask of a lower level)."""
    shape_hw = (int(shape_hw[0]), int(shape_hw[1]))
    polygons = [r for r in regions if not r.is_points]
    _warn_unknown(polygons, labels)
    fg = np.zeros(shape_hw, bool)
    bg = np.zeros(shape_hw, bool)
    for r in polygons:
        target = fg if class_label(r.classification, labels) == FOREGROUND else bg
        for poly in getattr(r.geometry, "geoms", [r.geometry]):
            rows, cols = _fill(poly, shape_hw, float(downsample))
            target[rows, cols] = True
    return (fg & ~bg).astype(np.uint8)


def write_mask(path: str | Path, mask: np.ndarray) -> Path:
    """Write a mask as the folder dataset reads it: a 0/255 grayscale PNG, atomically."""
    from PIL import Image

    image = Image.fromarray(np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8))
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def to_annotations(
    regions: Sequence[Region],
    image_id: str,
    image_shape: tuple[int, int],
    *,
    labels: Mapping[str, int] | None = None,
    source: str = "user",
    image_path: str | None = None,
) -> AnnotationSet:
    """The Point / MultiPoint features as trusted FG/BG points (:func:`class_label`) of an
    image of level-0 ``image_shape`` ``(H, W)``; points outside it are left out with a
    warning. ``source="user"``: a person's clicks, which win over sampled seeds."""
    points = [r for r in regions if r.is_points]
    _warn_unknown(points, labels)
    h, w = int(image_shape[0]), int(image_shape[1])
    coords, values = [], []
    for r in points:
        label = class_label(r.classification, labels)
        for p in getattr(r.geometry, "geoms", [r.geometry]):
            coords.append((p.y - 0.5, p.x - 0.5))
            values.append(label)
    arr = np.asarray(coords, np.float64).reshape(-1, 2)
    inside = (arr >= -0.5).all(1) & (arr[:, 0] < h - 0.5) & (arr[:, 1] < w - 0.5)
    if not inside.all():
        warnings.warn(
            f"{int((~inside).sum())} point(s) outside the image ({w} x {h}) left out",
            GeoJSONWarning,
            stacklevel=2,
        )
    return AnnotationSet.from_arrays(
        image_id, (h, w), arr[inside], np.asarray(values, np.int64)[inside], source,
        image_path=image_path,
    )  # fmt: skip
