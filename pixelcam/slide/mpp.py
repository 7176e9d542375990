"""Microns per pixel: the pixel size of slides and images, of models, and the level and
resize that show a model tissue at the pixel size it was trained at.

**Reading a pixel size** (:func:`read_mpp`), ``(x, y)`` in micrometres per pixel of the
full-resolution image, or None when the file does not say:

1. OpenSlide's ``openslide.mpp-x`` / ``openslide.mpp-y`` (:func:`openslide_mpp`; every
   scanner format OpenSlide reads).
2. OME-TIFF ``PhysicalSizeX`` / ``PhysicalSizeY`` with their units (default µm).
3. The Aperio ImageDescription's ``MPP = 0.2520`` (SVS).
4. TIFF ``XResolution`` / ``YResolution`` with ``ResolutionUnit`` centimetre or inch, and,
   for PNG (``pHYs``) and JPEG (JFIF density), the dots per inch Pillow reports.

**Screen resolutions are not pixel sizes.** Rule 4 believes a resolution only when its unit
is a length (a TIFF's unitless default is ignored) and the pixel size it gives lies in
:data:`PLAUSIBLE_RESOLUTION_MPP` (0.05-20 µm): 72 dpi (the TIFF/JPEG default, 352.8 µm),
96 dpi (264.6 µm), 300 dpi (84.7 µm) and 1200 dpi (21.2 µm) are screen or print settings
that say nothing of a microscope; a 2400 dpi flatbed scan (10.6 µm) is believed.

**The scale rule** (:func:`choose_level`). A checkpoint records the pixel size of its
training images (``pixelcam train --mpp``; its meta ``"mpp"``, :func:`model_mpp`). At
inference the slide is read at the pyramid level whose pixel size is the largest one not
above the model's (the coarsest level that still has all the detail the model was trained
with), then scaled by ``factor = level mpp / model mpp`` (at most 1: a downscale) so that
one model-scale pixel covers what one training pixel covered. A slide coarser than the
model everywhere is read at level 0 and upscaled (``factor > 1``). Within
:data:`TOLERANCE` (2 %) a level counts as the model's scale and ``factor`` is 1. When the
pixel size is unknown on either side nothing is rescaled (:func:`scale_note` says so).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixelcam.errors import InputError

__all__ = [
    "PLAUSIBLE_RESOLUTION_MPP",
    "TOLERANCE",
    "ScaleChoice",
    "check_mpp",
    "choose_level",
    "format_mpp",
    "model_mpp",
    "openslide_mpp",
    "read_mpp",
    "resolution_mpp",
    "scale_note",
    "tiff_mpp",
]

#: Pixel sizes (µm) believed from resolution tags / dpi (see the module docstring).
PLAUSIBLE_RESOLUTION_MPP = (0.05, 20.0)
#: Relative difference under which two pixel sizes count as the same scale.
TOLERANCE = 0.02
#: The largest pixel size accepted from explicit metadata or a user (1 mm a pixel).
MAX_MPP = 1000.0

_UNIT_MICRONS = {
    "µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "nm": 1e-3, "pm": 1e-6, "å": 1e-4, "\u00c5": 1e-4, "mm": 1e3, "cm": 1e4, "m": 1e6,
    "in": 25400.0, "inch": 25400.0, "ft": 304800.0,
}  # fmt: skip
_APERIO_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)")


def check_mpp(value: Any, what: str = "mpp") -> float:
    """``value`` as a pixel size in µm (a finite number in (0, :data:`MAX_MPP`]), else an
    :class:`~pixelcam.errors.InputError` naming ``what``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(
            f"{what} must be a number of micrometres per pixel, got {value!r}"
        ) from None
    if not (math.isfinite(number) and 0 < number <= MAX_MPP):
        raise InputError(f"{what} must be a positive number of micrometres per pixel "
                         f"(at most {MAX_MPP:g}), got {value!r}")  # fmt: skip
    return number


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and 0 < number <= MAX_MPP else None


def _pair(x: Any, y: Any) -> tuple[float, float] | None:
    """``(x, y)`` when both are valid sizes; one of them stands for both (square pixels)."""
    px, py = _positive(x), _positive(y)
    if px is None and py is None:
        return None
    return (px if px is not None else py, py if py is not None else px)


def format_mpp(mpp: float | Sequence[float] | None) -> str:
    """``"0.25 µm/px"``, ``"0.25 x 0.26 µm/px"`` or ``"unknown"``."""
    if mpp is None:
        return "unknown"
    if isinstance(mpp, (int, float)):
        return f"{float(mpp):.4g} µm/px"
    x, y = (float(v) for v in mpp)
    if abs(x - y) <= TOLERANCE * max(x, y):
        return f"{x:.4g} µm/px"
    return f"{x:.4g} x {y:.4g} µm/px"


def openslide_mpp(properties: Mapping[str, str]) -> tuple[float, float] | None:
    """``(x, y)`` from OpenSlide's ``openslide.mpp-x`` / ``openslide.mpp-y`` properties."""
    return _pair(properties.get("openslide.mpp-x"), properties.get("openslide.mpp-y"))


def resolution_mpp(x_res: Any, y_res: Any, unit: Any) -> tuple[float, float] | None:
    """``(x, y)`` µm/px from pixels per ``unit`` (``"centimeter"``, ``"inch"``, TIFF's 3
    and 2, or ``"dpi"``/``"meter"``), believed only within :data:`PLAUSIBLE_RESOLUTION_MPP`
    (the module docstring's rule); None otherwise."""
    name = str(getattr(unit, "name", unit)).lower()
    per = {"3": 1e4, "centimeter": 1e4, "cm": 1e4, "2": 25400.0, "inch": 25400.0,
           "dpi": 25400.0, "meter": 1e6, "m": 1e6}.get(name)  # fmt: skip
    if per is None:
        return None
    low, high = PLAUSIBLE_RESOLUTION_MPP
    sizes = []
    for res in (x_res, y_res):
        if isinstance(res, tuple) and len(res) == 2:  # a TIFF RATIONAL (numerator, denominator)
            res = res[0] / res[1] if res[1] else 0.0
        try:
            number = float(res)
        except (TypeError, ValueError):
            number = 0.0
        size = per / number if math.isfinite(number) and number > 0 else None
        sizes.append(size if size is not None and low <= size <= high else None)
    return _pair(*sizes)


def _ome_mpp(xml: str) -> tuple[float, float] | None:
    """``PhysicalSizeX/Y`` (with their units) of the first OME ``Pixels`` element."""
    pixels = re.search(r"<(?:\w+:)?Pixels\b[^>]*>", xml)
    if pixels is None:
        return None
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', pixels.group(0)))
    sizes = []
    for axis in "XY":
        value = _positive(attrs.get(f"PhysicalSize{axis}"))
        unit = attrs.get(f"PhysicalSize{axis}Unit", "µm")
        factor = _UNIT_MICRONS.get(unit, _UNIT_MICRONS.get(unit.lower()))
        sizes.append(value * factor if value is not None and factor is not None else None)
    return _pair(*sizes)


def tiff_mpp(tif: Any) -> tuple[float, float] | None:
    """The pixel size of an open :class:`tifffile.TiffFile`'s first image: OME, then
    Aperio, then the resolution tags (module docstring)."""
    page = tif.pages.first
    if tif.is_ome and tif.ome_metadata:
        found = _ome_mpp(tif.ome_metadata)
        if found is not None:
            return found
    description = page.description or ""
    if description.startswith("Aperio"):
        match = _APERIO_MPP.search(description)
        if match is not None and _positive(match.group(1)) is not None:
            value = float(match.group(1))
            return (value, value)
    tags = page.tags
    x, y, unit = (tags.get(name) for name in ("XResolution", "YResolution", "ResolutionUnit"))
    if x is None or y is None or unit is None:
        return None
    return resolution_mpp(x.value, y.value, unit.value)


def _pillow_mpp(path: Path) -> tuple[float, float] | None:
    """From the dpi Pillow reports (PNG ``pHYs`` in metres, JPEG JFIF density)."""
    from PIL import Image

    with Image.open(path) as im:
        dpi = im.info.get("dpi")
    if not (isinstance(dpi, tuple) and len(dpi) == 2):
        return None
    return resolution_mpp(dpi[0], dpi[1], "dpi")


def read_mpp(path: str | Path) -> tuple[float, float] | None:
    """The pixel size ``(x, y)`` in µm of the image file at ``path`` (module docstring), or
    None when it says nothing believable. Reads the header only; never raises for an
    unreadable file (the image reader reports that)."""
    from pixelcam.slide.scanner import OPENSLIDE_EXTENSIONS

    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in OPENSLIDE_EXTENSIONS:
            from pixelcam.slide.scanner import open_openslide

            return openslide_mpp(open_openslide(path).properties)
        if suffix in (".tif", ".tiff", ".svs", ".btf", ".tf8", ".qptiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return tiff_mpp(tif)
        return _pillow_mpp(path)
    except Exception:  # noqa: BLE001 - a question, not a reader
        return None


def model_mpp(meta: Mapping[str, Any] | None) -> float | None:
    """The training pixel size a checkpoint's meta records (``"mpp"``), or None (absent in
    checkpoints made before it was recorded, or not a valid size)."""
    if not meta:
        return None
    return _positive(meta.get("mpp"))


@dataclass(frozen=True)
class ScaleChoice:
    """Where to read so that a model sees its training pixel size: ``level``, its pixel size
    ``level_mpp`` (µm), and ``factor`` (model-scale pixels per level pixel: the resize, at
    most 1 unless every level is coarser than the model)."""

    level: int
    level_mpp: float
    factor: float
    model_mpp: float

    def describe(self) -> str:
        what = "as is" if self.factor == 1 else f"resized x{self.factor:.3g}"
        return (f"model {format_mpp(self.model_mpp)}: level {self.level} "
                f"({format_mpp(self.level_mpp)}) {what}")  # fmt: skip


def choose_level(level_mpps: Sequence[float], target: float) -> ScaleChoice:
    """The level (module docstring's rule) and resize factor for a model trained at
    ``target`` µm/px, given each level's pixel size (largest image first)."""
    target = check_mpp(target, "model mpp")
    mpps = [check_mpp(m, "level mpp") for m in level_mpps]
    if not mpps:
        raise InputError("no pyramid level to choose from")
    fine_enough = [k for k, m in enumerate(mpps) if m <= target * (1 + TOLERANCE)]
    level = max(fine_enough, key=lambda k: mpps[k]) if fine_enough else 0
    factor = mpps[level] / target
    if abs(factor - 1.0) <= TOLERANCE:
        factor = 1.0
    return ScaleChoice(level=level, level_mpp=mpps[level], factor=factor, model_mpp=target)


def scale_note(image_mpp: Any, model: float | None, fallback: str = "") -> str | None:
    """The line saying that the pixel size is unknown on one side (and what is done
    instead: ``fallback``), or None when both are known."""
    if image_mpp is not None and model is not None:
        return None
    if image_mpp is None and model is None:
        text = "pixel size unknown for the image and the model"
    elif image_mpp is None:
        text = f"pixel size of the image unknown (model trained at {format_mpp(model)})"
    else:
        text = f"pixel size of the model unknown (image {format_mpp(image_mpp)})"
    text += ": the model's training scale is not matched"
    return text + (f"; {fallback}" if fallback else "")
