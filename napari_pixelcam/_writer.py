"""napari writers: maps as float32 TIFF, points as PixelCAM annotation files.

Maps (any non-RGB Image layer, e.g. a CAM) are written as zlib-compressed float32 TIFF; the
layer's scale goes into the TIFF resolution tags (pixels per unit: ``1 / scale``) and, with
translate, name and colormap, into the JSON image description that this plugin's reader
reads back. An RGB layer keeps its integer pixel type (converting a photograph to float32
would only make it bigger). A layer in microns (``metadata["mpp"]``, set by the reader on
images that say their pixel size and copied to their maps) is written as an OME-TIFF whose
``PhysicalSizeX/Y`` (µm) and resolution tags (pixels per centimetre) carry it; the JSON then
goes in the OME ``Description``.

Points are written with :func:`pixelcam.annotations.save_annotations`. The layer must say
which image it annotates and the label of each point:

- ``layer.features["label"]``: 1 foreground, 0 background (required);
- ``layer.features["source"]``: optional, ``"user"`` when absent;
- ``layer.metadata["image_shape"]``: the image's ``(H, W)`` (required: without it the points
  cannot be rescaled to the training resolution);
- ``layer.metadata["image_id"]`` (else the stem of ``metadata["image_path"]``, else the
  layer name) and ``layer.metadata["image_path"]`` (optional).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

MAP_EXTENSIONS = (".tif", ".tiff")
POINTS_EXTENSIONS = (".csv", ".json")


def _with_suffix(path: str | os.PathLike, allowed: tuple[str, ...]) -> Path:
    path = Path(path)
    return path if path.suffix.lower() in allowed else path.with_name(path.name + allowed[0])


def _level0(data: Any, meta: dict) -> np.ndarray:
    if meta.get("multiscale") or isinstance(data, (list, tuple)):
        data = data[0]
    return np.asarray(data)


def _jsonable(value: Any) -> Any:
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def write_map(path: str, data: Any, meta: dict) -> list[str]:
    """Write an Image layer as a zlib-compressed TIFF (float32 unless RGB); returns [path]."""
    import tifffile

    from pixelcam.errors import InputError

    path = _with_suffix(path, MAP_EXTENSIONS)
    array = _level0(data, meta)
    rgb = bool(meta.get("rgb")) and array.ndim >= 3 and array.shape[-1] in (3, 4)
    if rgb:
        if array.dtype.kind not in "ui":
            array = array.astype(np.float32)
    else:
        if array.dtype.kind not in "uifb":
            raise InputError(f"cannot save a {array.dtype} image as a float32 map: {path}")
        array = array.astype(np.float32)
    spatial = array.ndim - (1 if rgb else 0)
    scale = _jsonable(meta.get("scale")) or [1.0] * spatial
    translate = _jsonable(meta.get("translate")) or [0.0] * spatial
    description: dict[str, Any] = {"scale": scale, "translate": translate}
    if meta.get("name"):
        description["name"] = str(meta["name"])
    colormap = meta.get("colormap")
    colormap = getattr(colormap, "name", colormap)
    if isinstance(colormap, str):
        description["colormap"] = colormap
    kwargs: dict[str, Any] = {
        "compression": "zlib",
        "metadata": description,
        "photometric": "rgb" if rgb else "minisblack",
    }
    if len(scale) >= 2 and all(s > 0 for s in scale[-2:]):
        sy, sx = scale[-2:]
        kwargs["resolution"] = (1.0 / sx, 1.0 / sy)
        kwargs["resolutionunit"] = "NONE"
    mpp = _layer_mpp(meta)
    if mpp is not None and array.ndim == (3 if rgb else 2):
        kwargs.update(_ome(description, mpp, "YXS" if rgb else "YX"))
    from pixelcam.fileio import atomic_write  # no partial file; a plain write's mode

    atomic_write(path, lambda tmp: tifffile.imwrite(tmp, array, **kwargs))
    return [str(path)]


def _layer_mpp(meta: dict) -> tuple[float, float] | None:
    from napari_pixelcam._microns import MPP_KEY

    value = (meta.get("metadata") or {}).get(MPP_KEY)
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (x, y) if x > 0 and y > 0 else None


def _ome(description: dict[str, Any], mpp: tuple[float, float], axes: str) -> dict[str, Any]:
    """tifffile keywords of an OME-TIFF carrying the pixel size ``mpp`` ``(x, y)`` µm."""
    import json

    x, y = mpp
    return {
        "ome": True,
        "metadata": {
            "axes": axes, "Name": description.get("name", "map"),
            "PhysicalSizeX": x, "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": y, "PhysicalSizeYUnit": "µm",
            "Description": json.dumps({**description, "mpp": [x, y]}),
        },
        "resolution": (1e4 / x, 1e4 / y),
        "resolutionunit": "CENTIMETER",
    }  # fmt: skip


def _feature(features: Any, name: str) -> np.ndarray | None:
    if features is None:
        return None
    try:
        if name not in features:
            return None
        return np.asarray(features[name])
    except TypeError:
        return None


def write_points(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Points layer as a PixelCAM annotation file (CSV or JSON); returns [path]."""
    from pixelcam.annotations import AnnotationSet, save_annotations
    from pixelcam.errors import InputError

    path = _with_suffix(path, POINTS_EXTENSIONS)
    coords = np.asarray(data, dtype=np.float64)
    coords = coords.reshape(0, 2) if coords.size == 0 else coords
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise InputError(f"points of shape {coords.shape} cannot be saved as 2-D points: {path}")
    if coords.shape[1] > 2:
        extra = coords[:, :-2]
        if len(coords) and not np.all(extra == extra[:1]):
            raise InputError(
                f"the points lie on several planes (dims 0..{coords.shape[1] - 3}); "
                f"annotations are 2-D: {path}"
            )
        coords = coords[:, -2:]
    layer_meta = meta.get("metadata") or {}
    name = meta.get("name") or "points"
    shape = layer_meta.get("image_shape")
    if shape is None:
        raise InputError(
            f"points layer {name!r} has no image_shape in its metadata, so {path} could not "
            "say which image size the points belong to; set layer.metadata['image_shape'] = "
            "(H, W) or save annotations from the PixelCAM panel"
        )
    features = meta.get("features")
    labels = _feature(features, "label")
    if labels is None:
        raise InputError(
            f"points layer {name!r} has no 'label' feature (1 foreground, 0 background): {path}"
        )
    if labels.dtype == bool:
        labels = labels.astype(np.int64)
    sources = _feature(features, "source")
    source_list = [str(s) for s in sources] if sources is not None else "user"
    image_path = layer_meta.get("image_path")
    image_id = layer_meta.get("image_id") or (Path(image_path).stem if image_path else name)
    ann = AnnotationSet.from_arrays(
        str(image_id),
        tuple(shape),
        coords,
        labels,
        source_list,
        None if image_path is None else str(image_path),
    )
    save_annotations(path, ann)
    return [str(path)]
