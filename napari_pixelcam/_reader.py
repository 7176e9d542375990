"""napari reader: histology images, their masks, pyramidal slides, maps and point annotations.

- A plain image (BMP/PNG/JPEG/TIFF) opens as an RGB Image layer named by the file stem,
  decoded by :func:`pixelcam.data.io.read_image` (16-bit, grayscale, RGBA, palette...). A mask
  beside it (``<stem>_anno.<ext>`` as in GlaS, or ``<stem>_mask.png``) is added as a Labels
  layer ``<stem> mask`` (0/1).
- A mask file itself (``*_anno.*``, ``*_mask.*``) opens as a Labels layer.
- A pyramidal TIFF / OME-TIFF / SVS opens lazily as a multiscale Image layer (any SVS
  file is read lazily, also without a pyramid), and so do the scanner formats OpenSlide
  reads (MIRAX, NDPI, VMS, SCN, BIF, DICOM: :func:`pixelcam.slide.open_slide`).
- A file that says its pixel size (:func:`pixelcam.slide.read_mpp`) opens in microns:
  ``scale = (mpp_y, mpp_x)``, ``metadata["mpp"] = (mpp_x, mpp_y)``, the mask beside it with
  the same scale, and units µm (napari's scale bar then reads µm;
  :mod:`napari_pixelcam._microns`).
- A float TIFF with one channel (a map, e.g. saved by this plugin's writer) opens as a
  float Image layer, with the scale stored in the file.
- ``*.points.csv`` / ``*.points.json`` (:mod:`pixelcam.annotations`) open as a Points layer
  with ``label`` and ``source`` features.

Image layers carry ``metadata={"path": ..., "image_id": <stem>}``. A file that cannot be
decoded raises an error whose message names it; napari shows it as a notification.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_pixelcam import _microns as microns
from napari_pixelcam._common import COLORMAPS, POINT_COLORS, data_module

PLAIN_EXTENSIONS: tuple[str, ...] = (".bmp", ".png", ".jpg", ".jpeg")
#: the scanner formats read through OpenSlide (pixelcam.slide.OPENSLIDE_EXTENSIONS)
SCANNER_EXTENSIONS: tuple[str, ...] = (
    ".mrxs", ".ndpi", ".vms", ".vmu", ".scn", ".bif", ".dcm", ".svslide",
)  # fmt: skip
IMAGE_EXTENSIONS: tuple[str, ...] = (
    *PLAIN_EXTENSIONS, ".tif", ".tiff", ".svs", *SCANNER_EXTENSIONS,
)  # fmt: skip
MASK_SUFFIXES: tuple[str, ...] = ("_anno", "_mask")

LayerData = tuple[Any, dict, str]
PathLike = str | os.PathLike


#: the file name patterns this plugin's reader is preferred for (napari then opens them
#: without asking which reader to use); napari's builtins stay one click away (File > Open
#: with Plugin, or the preference in napari's settings)
PREFERRED_PATTERNS: tuple[str, ...] = (
    "*.points.csv", "*.points.json", "*.svs", "*.bmp", "*.png", "*.jpg", "*.jpeg",
    "*.tif", "*.tiff", *(f"*{ext}" for ext in SCANNER_EXTENSIONS),
)  # fmt: skip


def prefer_reader(settings: Any = None) -> list[str]:
    """Make this plugin napari's reader for :data:`PREFERRED_PATTERNS` where the user has
    not chosen one (napari's ``plugins.extension2reader`` setting, kept across sessions;
    a choice the user made is never changed). Returns the patterns set now."""
    from napari_pixelcam._common import PLUGIN

    if settings is None:
        from napari.settings import get_settings

        settings = get_settings()
    current = dict(settings.plugins.extension2reader)
    added = [p for p in PREFERRED_PATTERNS if p not in current]
    if added:
        settings.plugins.extension2reader = {**current, **dict.fromkeys(added, PLUGIN)}
    return added


def _kind(path: PathLike) -> str | None:
    """What the reader would make of ``path``: "image", "points", or None (not ours)."""
    from pixelcam.annotations import is_annotation_file

    path = Path(path)
    if path.is_dir():
        return None
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return "image"
    if is_annotation_file(path):
        return "points"
    return None


def get_reader(path: PathLike | Sequence[PathLike]) -> Callable[..., list[LayerData]] | None:
    """The npe2 reader hook: a reader function for the paths we can open, else None."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or any(_kind(p) is None for p in paths):
        return None
    return read_paths


def read_paths(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """Read one path or several into napari layer data (see the module docstring)."""
    from pixelcam.errors import InputError

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    failed: list[str] = []
    for p in paths:
        try:
            layers.extend(_read_one(Path(p)))
        except InputError as exc:
            if len(paths) == 1:
                raise
            failed.append(str(exc))
    if failed and not layers:
        raise InputError(f"none of the {len(paths)} files could be read: " + "; ".join(failed))
    if failed:  # a dropped folder of files: one bad file must not lose the good ones
        skipped = f"{len(failed)} of {len(paths)} files skipped: " + "; ".join(failed)
        warnings.warn(skipped, stacklevel=2)
    return layers


def _read_one(path: Path) -> list[LayerData]:
    from pixelcam.errors import InputError

    kind = _kind(path)
    if kind == "points":
        return _read_points(path)
    if kind != "image":
        raise InputError(f"napari-pixelcam cannot read {path}")
    if _mask_base(path) is not None:
        return [_read_mask_layer(path)]
    if path.suffix.lower() in PLAIN_EXTENSIONS:
        return _read_plain(path)  # no pyramid: the slide reader is not even imported
    from pixelcam.slide import is_pyramidal

    if path.suffix.lower() in (".svs", *SCANNER_EXTENSIONS) or is_pyramidal(path):
        return [_read_pyramid(path)]
    as_map = _read_float_map(path)
    if as_map is not None:
        return [as_map]
    return _read_plain(path)


def _mask_base(path: Path) -> str | None:
    """The image stem of a mask file name (``train_1_anno.bmp`` -> ``train_1``), else None."""
    stem = path.stem
    for suffix in MASK_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return None


def _image_meta(path: Path) -> dict:
    return {"path": str(path), "image_id": path.stem}


def _in_microns(meta: dict, mpp: tuple[float, float] | None) -> dict:
    """``meta`` with the layer's scale in µm when ``mpp`` ``(x, y)`` is known."""
    if mpp is not None:
        meta["scale"] = (mpp[1], mpp[0])
        meta["units"] = ("um", "um")  # napari's scale bar then reads µm
        meta.setdefault("metadata", {})[microns.MPP_KEY] = tuple(mpp)
    return meta


def _read_plain(path: Path) -> list[LayerData]:
    from pixelcam.slide.mpp import read_mpp

    io = data_module("pixelcam.data.io")  # never torch on the GUI thread
    image = io.read_image(path)
    meta = _in_microns({"name": path.stem, "rgb": True, "metadata": _image_meta(path)},
                       read_mpp(path))  # fmt: skip
    layers: list[LayerData] = [(image, meta, "image")]
    mask_path = find_mask(path)
    if mask_path is not None:
        from pixelcam.errors import InputError

        try:
            mask = io.read_mask(mask_path, shape=image.shape[:2])
        except InputError as exc:  # a bad mask must not keep the image from opening
            warnings.warn(f"mask not loaded: {exc}", stacklevel=2)
        else:
            layers.append(_mask_layer(mask, path.stem, mask_path))
            if "scale" in meta:  # the mask lies over its image
                layers[-1][1].update(scale=meta["scale"], units=meta["units"])
    return layers


def find_mask(image_path: PathLike) -> Path | None:
    """The mask beside an image: ``<stem>_anno.<ext>`` (GlaS) or ``<stem>_mask.<ext>``.

    The image's own extension is tried first, then PNG, then the other image extensions.
    """
    image_path = Path(image_path)
    order = [image_path.suffix, ".png", *IMAGE_EXTENSIONS]
    for suffix in MASK_SUFFIXES:
        for ext in dict.fromkeys(order):
            candidate = image_path.with_name(f"{image_path.stem}{suffix}{ext}")
            if candidate.is_file():
                return candidate
    return None


def _mask_layer(mask: Any, base: str, mask_path: Path) -> LayerData:
    """A ground-truth mask, drawn as a white outline (Labels ``contour``), not a fill: a
    map over the tissue stays readable, and the mask's edge shows where it should be."""
    style = mask_style(mask.shape)
    style["metadata"]["path"] = str(mask_path)
    return (mask, {"name": f"{base} mask", **style}, "labels")


def mask_style(shape: tuple[int, ...]) -> dict[str, Any]:
    """``add_labels`` keywords of a ground-truth mask: white, and marked so that the
    PixelCAM panel draws it as an outline (``contour``, which ``add_labels`` does not take;
    the panel sets it on every marked mask it sees)."""
    from napari_pixelcam._overlays import MASK_COLOR, OUTLINE_MASK_KEY

    return {
        "colormap": {None: MASK_COLOR, 0: "transparent"},
        "opacity": 0.5,
        "metadata": {OUTLINE_MASK_KEY: True},
    }


def _read_mask_layer(path: Path) -> LayerData:
    io = data_module("pixelcam.data.io")
    return _mask_layer(io.read_mask(path), _mask_base(path) or path.stem, path)


def _read_pyramid(path: Path) -> LayerData:
    """A pyramid as a lazy multiscale layer (an SVS without pyramid: one lazy level), in
    microns when the slide says its pixel size."""
    import numpy as np

    from pixelcam.slide import open_slide

    slide = open_slide(path)
    levels = slide.levels
    top = levels[0]
    rgb = top.ndim == 3 and top.shape[-1] in (3, 4)
    meta: dict[str, Any] = {
        "name": path.stem,
        "multiscale": len(levels) > 1,
        "rgb": rgb,
        "metadata": {**_image_meta(path), "pyramid": True, "backend": slide.backend},
    }
    _in_microns(meta, slide.mpp)
    if not (rgb and top.dtype == np.uint8):
        small = np.asarray(levels[-1])  # the smallest level: cheap, sets the contrast
        lo, hi = float(np.nanmin(small)), float(np.nanmax(small))
        meta["contrast_limits"] = (lo, hi if hi > lo else lo + 1.0)
    return (levels if len(levels) > 1 else top, meta, "image")


def _read_float_map(path: Path) -> LayerData | None:
    """A one-channel float TIFF as a float Image layer (None when it is something else)."""
    import numpy as np
    import tifffile

    from pixelcam.slide.mpp import tiff_mpp
    from pixelcam.slide.writer import stored_metadata

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0] if tif.series else None
            if series is None or series.dtype is None or series.dtype.kind != "f":
                return None
            if "S" in series.axes:
                return None
            data = series.asarray()
            stored = stored_metadata(tif)
            mpp = tiff_mpp(tif)
    except Exception:
        return None  # let read_image report a corrupt file with its own message
    data = np.squeeze(data)
    meta: dict[str, Any] = {"name": str(stored.get("name") or path.stem)}
    meta["metadata"] = _image_meta(path)
    if data.ndim == 2:
        _in_microns(meta, mpp)  # the stored scale (below) wins when there is one
    for key in ("scale", "translate"):
        value = stored.get(key)
        if isinstance(value, list) and len(value) == data.ndim:
            meta[key] = tuple(float(v) for v in value)
    finite = data[np.isfinite(data)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        meta["contrast_limits"] = (lo, hi if hi > lo else lo + 1.0)
    meta["colormap"] = str(stored.get("colormap") or COLORMAPS["pixelcam"])
    return (data.astype(np.float32, copy=False), meta, "image")


def _read_points(path: Path) -> list[LayerData]:
    import numpy as np

    from pixelcam.annotations import load_annotations

    loaded = load_annotations(path)
    layers = []
    for ann in loaded if isinstance(loaded, list) else [loaded]:
        labels = ann.labels().astype(np.int64)
        meta = {
            "name": f"{ann.image_id} points",
            "features": {"label": labels, "source": np.array(ann.sources(), dtype=object)},
            "face_color": [POINT_COLORS[int(lab)] for lab in labels] or "white",
            "metadata": {
                "path": str(path),
                "image_id": ann.image_id,
                "image_shape": tuple(ann.image_shape),
                "image_path": ann.image_path,
            },
        }
        layers.append((ann.coords(), meta, "points"))
    return layers
