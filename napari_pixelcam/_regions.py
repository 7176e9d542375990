"""Regions in napari: QuPath GeoJSON as layers and back, and map regions as editable shapes.

- **Reading** a ``.geojson`` (:func:`get_reader`, File > Open): polygons become a Shapes
  layer ``<stem> regions``, points a Points layer ``<stem> points`` whose ``label``
  feature is FG (1) / BG (0) by class name (:func:`pixelcam.geojson.class_label`), as the
  panel's seed points, so they can be edited and saved as trusted annotations.
- **Holes.** napari's shapes cannot hold holes: each polygon is its outer ring (feature
  ``ring="shell"``) plus one shape per hole (``ring="hole"``), all drawn as outlines only
  (no fill), so a hole shows as an inner outline. :func:`regions_from_shapes` puts the
  holes back in the shell that contains them, whatever their order or edits: the round
  trip keeps them.
- Shape features: ``classification``, ``name``, ``object_type``, ``method``, ``region``
  (the polygon's number), ``ring``, and one column per measurement (``Area px^2``...);
  outlines take the classification's colour (its QuPath colour, else green for foreground
  classes, cyan for background ones: colours neither eosin, hematoxylin nor DAB has).
- **Writing** a Shapes layer to ``.geojson`` (:func:`write_shapes`, File > Save Selected
  Layers) gives QuPath GeoJSON; shapes drawn by hand are unclassified annotations.
- **Map regions** (:func:`add_map_regions`, the panel's "Regions" button): the shown map
  at the panel's outline threshold, traced in a worker thread, as an editable Shapes layer
  over the image.

Coordinates: QuPath's are level-0 pixel corners (``x, y``); a layer's data are napari's
pixel centres (``row = y - 0.5``, ``col = x - 0.5``) in level-0 pixels, with the image's
scale (microns when the image says its pixel size).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_pixelcam import _common as common

LayerData = tuple[Any, dict, str]
SUFFIX = ".geojson"
#: layer metadata key of a regions Shapes layer
REGIONS_KEY = "pixelcam_regions"
FG_OUTLINE, BG_OUTLINE = "#7cff4f", "#00c7ff"
_COLUMNS = ("region", "ring", "classification", "name", "object_type", "method", "id")


def get_reader(path: str | os.PathLike | Sequence) -> Callable[..., list[LayerData]] | None:
    """The npe2 reader hook of ``*.geojson``."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if paths and all(str(p).lower().endswith(SUFFIX) for p in paths):
        return read_geojson_layers
    return None


def _image_beside(path: Path) -> Path | None:
    """The image a GeoJSON annotates: ``slide.geojson`` (or ``slide.<method>.geojson``)
    beside ``slide.svs|tif|png...``."""
    from napari_pixelcam._reader import IMAGE_EXTENSIONS

    stems = [path.name[: -len(SUFFIX)], path.name[: -len(SUFFIX)].split(".")[0]]
    for stem in dict.fromkeys(stems):
        for ext in IMAGE_EXTENSIONS:
            candidate = path.with_name(stem + ext)
            if candidate.is_file():
                return candidate
    return None


def _image_facts(path: Path) -> tuple[tuple[int, int] | None, dict]:
    """The level-0 shape of the image beside ``path`` and the layer keywords that put
    shapes over it (its scale in microns when known)."""
    image = _image_beside(path)
    if image is None:
        return None, {}
    from pixelcam.slide.mpp import read_mpp

    shape = _level0_shape(image)
    mpp = read_mpp(image)
    extra: dict[str, Any] = {"metadata": {"image_path": str(image), "image_id": image.stem}}
    if shape is not None:
        extra["metadata"]["image_shape"] = shape
    if mpp is not None:
        extra.update(scale=(mpp[1], mpp[0]), units=("um", "um"))
    return shape, extra


def _level0_shape(image: Path) -> tuple[int, int] | None:
    from pixelcam.slide.reader import SLIDE_EXTENSIONS, open_pyramid

    if image.suffix.lower() in SLIDE_EXTENSIONS:
        try:
            return tuple(int(v) for v in open_pyramid(image)[0].shape[:2])  # type: ignore[return-value]
        except Exception:  # noqa: BLE001 - not a slide: its header below
            pass
    shape = common.data_module("pixelcam.data.io").image_shape(image)
    return (int(shape[0]), int(shape[1])) if shape is not None else None


def read_geojson_layers(path: str | os.PathLike | Sequence) -> list[LayerData]:
    """A ``.geojson`` as a Shapes layer (polygons) and a Points layer (points)."""
    from pixelcam.geojson import read_geojson

    if not isinstance(path, (str, os.PathLike)):
        return [layer for p in path for layer in read_geojson_layers(p)]
    path = Path(path)
    shape, extra = _image_facts(path)
    regions = read_geojson(path, image_shape=shape)
    stem = path.name[: -len(SUFFIX)]
    layers = []
    polygons = [r for r in regions if not r.is_points]
    if polygons:
        data, kwargs = shapes_data(polygons)
        kwargs.update(name=f"{stem} regions", **_merged(kwargs, extra, path))
        layers.append((data, kwargs, "shapes"))
    points = [r for r in regions if r.is_points]
    if points:
        layers.append(_points_layer(points, stem, extra, path))
    return layers


def _merged(kwargs: dict, extra: dict, path: Path) -> dict:
    meta = {**kwargs.get("metadata", {}), **extra.get("metadata", {}), "path": str(path)}
    return {**{k: v for k, v in extra.items() if k != "metadata"}, "metadata": meta}


def _points_layer(points: list, stem: str, extra: dict, path: Path) -> LayerData:
    from pixelcam.geojson import class_label

    coords, labels, names = [], [], []
    for r in points:
        for p in getattr(r.geometry, "geoms", [r.geometry]):
            coords.append((p.y - 0.5, p.x - 0.5))
            labels.append(class_label(r.classification))
            names.append(r.classification or "")
    kwargs = {
        "name": f"{stem} points",
        "features": {
            "label": np.asarray(labels, np.int64),
            "source": ["user"] * len(labels),
            "classification": names,
        },  # fmt: skip
        "face_color": [common.POINT_COLORS[int(v)] for v in labels],
        "border_color": "white",
        **_merged({}, extra, path),
    }
    return (np.asarray(coords, np.float64).reshape(-1, 2), kwargs, "points")


def _color(region: Any) -> str:
    from pixelcam.geojson import FOREGROUND, class_label

    if region.color is not None:
        return "#{:02x}{:02x}{:02x}".format(*region.color)
    return FG_OUTLINE if class_label(region.classification) == FOREGROUND else BG_OUTLINE


def shapes_data(regions: Sequence[Any], width: float | None = None) -> tuple[list, dict]:
    """Shapes layer data (napari pixel centres) and keywords of polygon regions (module
    docstring: a shape per outer ring and per hole, outlines in classification colours)."""
    data, rows, colors = [], [], []
    for k, region in enumerate(regions):
        for polygon in getattr(region.geometry, "geoms", [region.geometry]):
            rings = [("shell", polygon.exterior)] + [("hole", h) for h in polygon.interiors]
            for ring, coords in rings:
                xy = np.asarray(coords.coords)[:-1]
                data.append(xy[:, ::-1] - 0.5)
                row = {"region": k, "ring": ring, "classification": region.classification or "",
                       "name": region.name or "", "object_type": region.object_type,
                       "method": region.method or "", "id": region.id}  # fmt: skip
                rows.append({**row, **region.measurements})
                colors.append(_color(region))
    import pandas as pd

    features = pd.DataFrame(rows, columns=None if rows else list(_COLUMNS))
    extent = max((float(np.ptp(d, axis=0).max()) for d in data), default=100.0)
    kwargs = {
        "shape_type": "polygon",
        "features": features,
        "edge_color": colors or "white",
        "face_color": "transparent",
        "edge_width": width or max(1.0, extent / 400),
        "metadata": {REGIONS_KEY: True},
        "feature_defaults": _defaults(features),
    }
    return data, kwargs


def _defaults(features: Any) -> dict[str, Any]:
    """What a shape drawn by hand gets: its own region, unclassified, no measurements."""
    fixed = {"region": -1, "ring": "shell", "object_type": "annotation"}
    return {c: fixed.get(c, "" if c in _COLUMNS else np.nan) for c in features.columns}


def _value(row: Any, key: str) -> Any:
    value = row.get(key) if hasattr(row, "get") else None
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def _measurements(row: Any) -> dict[str, float]:
    out = {}
    for key, value in row.items():
        if key in _COLUMNS or isinstance(value, (bool, np.bool_)):
            continue
        if isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value):
            out[str(key)] = float(value)
    return out


def regions_from_shapes(
    data: Sequence[Any], features: Any = None, edge_colors: Any = None
) -> list[Any]:
    """Regions (QuPath coordinates) of Shapes layer data: each hole (``ring="hole"``) goes
    into the smallest outer ring that contains it; polygons of one ``region`` number are
    one MultiPolygon; shapes without features are unclassified annotations. A classified
    region takes its first shape's outline colour (``edge_colors``, RGBA rows)."""
    import shapely

    from pixelcam.geojson import Region

    n = len(data)
    table = features if features is not None and len(features) == n else None
    rows = [table.iloc[i].to_dict() if table is not None else {} for i in range(n)]
    polys = [shapely.Polygon(np.asarray(d, float)[:, -2:][:, ::-1] + 0.5) for d in data]
    holes = [i for i in range(n) if rows[i].get("ring") == "hole"]
    shells = [i for i in range(n) if i not in set(holes)]
    inner: dict[int, list[Any]] = {i: [] for i in shells}
    for h in holes:
        around = [s for s in shells if polys[s].covers(polys[h])]
        if around:
            inner[min(around, key=lambda s: polys[s].area)].append(polys[h].exterior)
    groups: dict[Any, list[int]] = {}
    for s in shells:
        key = _value(rows[s], "region")
        groups.setdefault(("r", key) if key is not None and key >= 0 else ("s", s), []).append(s)
    regions = []
    for members in groups.values():
        parts = [shapely.make_valid(shapely.Polygon(polys[s].exterior, inner[s])) for s in members]
        row = rows[members[0]]
        method = _value(row, "method")
        regions.append(
            Region(
                shapely.union_all(parts),
                _value(row, "classification") or None,
                None,
                _value(row, "object_type") or "annotation",
                _value(row, "name") or None,
                _measurements(row),
                {"method": method} if method else {},
            )  # fmt: skip
        )
        if _value(row, "id"):
            regions[-1].id = str(row["id"])
        if regions[-1].classification and edge_colors is not None and len(edge_colors) == n:
            regions[-1].color = _hex_rgb(edge_colors[members[0]])
    return regions


def _hex_rgb(color: Any) -> tuple[int, int, int]:
    rgba = np.asarray(color, float).ravel()
    return tuple(int(round(c * 255)) for c in rgba[:3])  # type: ignore[return-value]


def write_shapes(path: str, data: Any, meta: dict) -> list[str]:
    """The npe2 writer of a Shapes layer as QuPath GeoJSON; returns ``[path]``."""
    from pixelcam.geojson import write_geojson

    target = Path(path)
    if target.suffix.lower() != SUFFIX:
        target = target.with_name(target.name + SUFFIX)
    write_geojson(target, regions_from_shapes(data, meta.get("features"), meta.get("edge_color")))
    return [str(target)]


# ---------------------------------------------------------------------- map regions
def trace_job(values: Any, threshold: float, method: str, scale: Any) -> list[Any]:
    """Worker-thread part: the regions of a map (numpy in, Regions out)."""
    from pixelcam.regions import regions_from_map

    return regions_from_map(np.asarray(values, np.float32), threshold, method=method, scale=scale)


def add_map_regions(viewer: Any, map_layer: Any, threshold: float, wait: bool = False) -> Any:
    """Trace ``map_layer`` at ``threshold`` in a worker and add the regions as an editable
    Shapes layer over its image; returns the worker (None without a map)."""
    if map_layer is None:
        common.notify("error", "PixelCAM: compute maps first, then turn the shown map into regions")
        return None
    method = map_layer.metadata.get(common.MAP_KEY, "map")
    source = map_layer.metadata.get("source")
    image = next((ly for ly in viewer.layers if ly.name == source), None)
    base = np.asarray(image.scale[-2:] if image is not None else map_layer.scale[-2:], float)
    scale = tuple(np.asarray(map_layer.scale[-2:], float) / base)  # level-0 px per map px
    translate = np.asarray(map_layer.translate[-2:], float)
    name = f"{method} regions [{source}]"

    def done(regions: list[Any]) -> None:
        if not regions:
            common.notify("info", f"PixelCAM: no pixel of {method} reaches {threshold:g}")
            return
        data, kwargs = shapes_data(regions)
        kwargs["metadata"].update(method=method, threshold=float(threshold), source=source)
        with common.paint_apart():
            if name in viewer.layers:
                viewer.layers.remove(name)
            viewer.add_shapes(
                data, name=name, scale=base, translate=translate, opacity=1.0, **kwargs
            )
            for layer in viewer.layers:  # the same contour, not editable: the shapes replace it
                if common.OUTLINE_KEY in layer.metadata:
                    layer.visible = False
        common.notify("info", f"PixelCAM: {len(regions)} regions of {method} at {threshold:g}")

    def failed(exc: BaseException) -> None:
        common.notify("error", f"PixelCAM: regions failed: {exc}")

    worker = common.in_worker(
        lambda: trace_job(map_layer.data, threshold, method, scale), done, failed
    )
    if wait:
        _wait(worker)
    return worker


def _wait(worker: Any, timeout: float = 120.0) -> None:
    import time

    from qtpy.QtWidgets import QApplication

    finished = []
    worker.finished.connect(lambda: finished.append(True))
    t0 = time.monotonic()
    while not finished and time.monotonic() - t0 < timeout:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()
