"""Lazy reading of pyramidal (tiled, multi-resolution) TIFF, OME-TIFF and SVS files.

:func:`open_pyramid` returns one dask array per resolution level, largest first. A chunk of
a level is one tile (or strip) of the file: computing a crop opens the file, reads the bytes
of the tiles the crop touches and decodes them with tifffile's own decoder, nothing else.
This needs tifffile only (no zarr): tifffile parses the pyramid (SubIFDs, OME-TIFF, SVS,
NDPI, ...) and gives each level's tile offsets, byte counts and decode function.

Axes of a level: ``(Y, X)`` or ``(Y, X, S)`` (samples last, also for planar files), with a
leading ``Z`` for volumetric tiles and a leading page axis when a level is stored as several
pages (an OME-TIFF channel per page, SVS focal planes).

Tiles compressed with JPEG, JPEG 2000 (most SVS files), JPEG XR, WebP... need the
``imagecodecs`` package; :func:`open_pyramid` checks the codec before returning and raises an
:class:`~pixelcam.errors.InputError` saying so.

:func:`open_slide` is the one entry point of the panel, the live viewport and
``pixelcam predict``: a :class:`Slide` (levels, pixel size, downsamples, backend). TIFF,
OME-TIFF and SVS go through tifffile as above; the scanner formats of
:data:`OPENSLIDE_EXTENSIONS` (MIRAX, Hamamatsu, Leica, Ventana, DICOM...) and any TIFF/SVS
that tifffile cannot read or decode (JPEG tiles without imagecodecs...) go through OpenSlide
(:mod:`pixelcam.slide.scanner`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pixelcam.errors import InputError
from pixelcam.slide.scanner import OPENSLIDE_EXTENSIONS

if TYPE_CHECKING:
    import dask.array

__all__ = [
    "OPENSLIDE_EXTENSIONS",
    "SLIDE_EXTENSIONS",
    "TIFF_EXTENSIONS",
    "Slide",
    "is_pyramidal",
    "open_pyramid",
    "open_slide",
]

#: TIFF-based slides tifffile reads (OpenSlide when tifffile cannot).
TIFF_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff", ".svs")
#: Extensions whose files may hold a pyramid (lower case, with the dot).
SLIDE_EXTENSIONS: tuple[str, ...] = TIFF_EXTENSIONS + OPENSLIDE_EXTENSIONS


def _read_bytes(path: str, offset: int, count: int) -> bytes:
    """Read ``count`` bytes at ``offset``: the only file access after opening a pyramid."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read(count)


@dataclass(frozen=True)
class _Page:
    """What is needed to read any tile of one TIFF page once the file is closed."""

    path: str
    level: int
    shaped: tuple[int, int, int, int, int]  # (separate samples, depth, length, width, contig)
    tile: tuple[int, int, int]  # (depth, length, width) of a segment (tile or strip)
    offsets: tuple[int, ...]
    counts: tuple[int, ...]
    dtype: np.dtype
    decode: Callable[..., Any]
    decode_kwargs: dict

    @property
    def grid(self) -> tuple[int, int, int, int]:
        sep, depth, length, width, _ = self.shaped
        td, th, tw = self.tile
        return sep, math.ceil(depth / td), math.ceil(length / th), math.ceil(width / tw)


class _PageArray:
    """An array-like over one page in the 5-D layout ``(sep, depth, length, width, contig)``.

    Indexing with slices (step 1) reads and decodes only the segments the slices touch.
    ``dask.array.from_array`` calls it once per chunk, with chunks equal to the segments.
    """

    def __init__(self, page: _Page) -> None:
        self.page = page
        self.shape = page.shaped
        self.dtype = page.dtype
        self.ndim = 5

    def _segment(self, s: int, d: int, y: int, x: int) -> np.ndarray | None:
        page = self.page
        _, nd, ny, nx = page.grid
        index = ((s * nd + d) * ny + y) * nx + x
        offset, count = page.offsets[index], page.counts[index]
        if offset == 0 or count == 0:
            return None  # a sparse (never written) tile: zeros
        try:
            data = _read_bytes(page.path, offset, count)
            decoded, _, shape = page.decode(data, index, **page.decode_kwargs)
            return np.asarray(decoded).reshape(shape)
        except MemoryError:
            raise
        except Exception as exc:
            raise InputError(
                f"cannot decode tile {index} of level {page.level} of {page.path}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (5 - len(key))
        bounds = []
        for k, n in zip(key, self.shape):
            if not isinstance(k, slice):
                raise TypeError(f"only slices can index a lazy TIFF page, got {k!r}")
            start, stop, step = k.indices(n)
            if step != 1:
                raise TypeError("lazy TIFF pages support slices with step 1 only")
            bounds.append((start, max(start, stop)))
        out = np.zeros([b - a for a, b in bounds], dtype=self.dtype)
        if out.size == 0:
            return out
        td, th, tw = self.page.tile
        steps = (1, td, th, tw)
        ranges = [range(a // t, (b - 1) // t + 1) for (a, b), t in zip(bounds[:4], steps)]
        c0, c1 = bounds[4]
        for s in ranges[0]:
            for d in ranges[1]:
                for y in ranges[2]:
                    for x in ranges[3]:
                        seg = self._segment(s, d, y, x)
                        if seg is None:
                            continue
                        origin = (s, d * td, y * th, x * tw)
                        src, dst = [], []
                        for axis, (a, b) in enumerate(bounds[:4]):
                            size = 1 if axis == 0 else seg.shape[axis - 1]
                            lo = max(a, origin[axis])
                            hi = min(b, origin[axis] + size)
                            src.append(slice(lo - origin[axis], hi - origin[axis]))
                            dst.append(slice(lo - a, hi - a))
                        out[tuple(dst) + (slice(None),)] = seg[tuple(src[1:]) + (slice(c0, c1),)]
        return out


def _check_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"slide file does not exist or is not a file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"slide file is empty (0 bytes): {path}")
    return path


def _page_info(path: Path, level: int, page: Any, keyframe: Any) -> _Page:
    if keyframe.is_tiled:
        tile = (keyframe.tiledepth, keyframe.tilelength, keyframe.tilewidth)
    else:
        rows = keyframe.rowsperstrip or keyframe.imagelength
        tile = (1, min(rows, keyframe.imagelength), keyframe.imagewidth)
    decode_kwargs = {}
    if keyframe.jpegtables is not None:
        decode_kwargs["jpegtables"] = keyframe.jpegtables
    if keyframe.jpegheader is not None:
        decode_kwargs["jpegheader"] = keyframe.jpegheader
    info = _Page(
        path=str(path),
        level=level,
        shaped=tuple(int(n) for n in keyframe.shaped),
        tile=tuple(int(n) for n in tile),
        offsets=tuple(int(n) for n in page.dataoffsets),
        counts=tuple(int(n) for n in page.databytecounts),
        dtype=np.dtype(keyframe.dtype),
        decode=keyframe.decode,
        decode_kwargs=decode_kwargs,
    )
    expected = math.prod(info.grid)
    if len(info.offsets) != expected or len(info.counts) != expected:
        raise InputError(
            f"level {level} of {path} lists {len(info.offsets)} tiles, expected {expected}"
        )
    try:  # an unavailable codec raises here, whatever the arguments
        info.decode(None, 0, **decode_kwargs)
    except Exception as exc:
        hint = " (pip install imagecodecs)" if "imagecodecs" in str(exc) else ""
        raise InputError(
            f"cannot decode level {level} of {path}: {type(exc).__name__}: {exc}{hint}"
        ) from exc
    return info


def _page_dask(info: _Page, token: str) -> dask.array.Array:
    """One page as a lazy dask array with axes ``[Z]YX[S]``."""
    import dask.array as da

    sep, depth, _, _, contig = info.shaped
    td, th, tw = info.tile
    array = da.from_array(
        _PageArray(info),
        chunks=(1, td, th, tw, contig),
        name=f"pixelcam-slide-{token}",
        asarray=False,
        fancy=False,
        lock=False,
        meta=np.empty((0,) * 5, dtype=info.dtype),
    )
    if sep > 1:  # planar samples (then contig is 1) -> samples last
        array = da.moveaxis(array[..., 0], 0, -1)  # (depth, length, width, sep)
        array = array.rechunk({3: sep})  # one chunk holds all samples of a tile
    else:
        array = array[0]  # (depth, length, width, contig)
    if array.shape[-1] == 1:
        array = array[..., 0]
    if depth == 1:
        array = array[0]
    return array


def open_pyramid(path: str | Path) -> list[dask.array.Array]:
    """The resolution levels of a (pyramidal) TIFF, OME-TIFF or SVS file as lazy dask arrays.

    Largest level first. Nothing but the TIFF structure is read here: a crop of a level
    reads only the tiles (or strips) it touches. A TIFF without a pyramid gives one level.
    Raises :class:`~pixelcam.errors.InputError` naming the file when it is not a readable
    TIFF, or when its tiles need a codec that is not installed.
    """
    import dask.array as da
    import tifffile
    from dask.base import tokenize

    path = _check_path(path)
    stat = path.stat()
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(f"no image in the TIFF file {path}")
            levels = []
            for k, level in enumerate(tif.series[0].levels):
                pages = [p for p in level.pages if p is not None]
                if not pages:
                    raise InputError(f"level {k} of {path} has no image data")
                keyframe = level.keyframe
                infos = [_page_info(path, k, p, keyframe) for p in pages]
                levels.append(infos)
    except InputError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # tifffile's parse errors: a corrupt or non-TIFF file
        raise InputError(f"cannot read the slide {path}: {type(exc).__name__}: {exc}") from exc

    arrays = []
    for k, infos in enumerate(levels):
        pages = [
            _page_dask(info, tokenize(os.fspath(path), stat.st_mtime_ns, stat.st_size, k, i))
            for i, info in enumerate(infos)
        ]
        arrays.append(pages[0] if len(pages) == 1 else da.stack(pages))
    return arrays


def is_pyramidal(path: str | Path) -> bool:
    """Whether ``path`` is a TIFF/SVS whose first image has more than one resolution level.

    A question, not a reader: any file that is not a readable TIFF answers False.
    """
    path = Path(path)
    if path.suffix.lower() not in SLIDE_EXTENSIONS or not path.is_file():
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return bool(tif.series) and len(tif.series[0].levels) > 1
    except Exception:
        return False


@dataclass(frozen=True)
class Slide:
    """A slide opened by :func:`open_slide`.

    ``levels``: lazy dask arrays, largest first (``(Y, X, 3)`` ``uint8`` from OpenSlide;
    tifffile's own layout, :func:`open_pyramid`, otherwise). ``mpp``: ``(x, y)`` µm per
    pixel of level 0, or None (:mod:`pixelcam.slide.mpp`). ``downsamples``: level-0 pixels
    per pixel of each level (OpenSlide's, or the mean of the height and width ratios).
    ``backend``: ``"tifffile"`` or ``"openslide"``. ``properties``: OpenSlide's properties
    (empty for tifffile).
    """

    path: str
    levels: list[Any]
    mpp: tuple[float, float] | None
    downsamples: tuple[float, ...]
    backend: str
    properties: dict[str, str]

    def level_mpp(self, level: int) -> tuple[float, float] | None:
        """``(x, y)`` µm per pixel of ``level`` (from the shape ratios), or None."""
        if self.mpp is None:
            return None
        top, this = self.levels[0].shape, self.levels[level].shape
        return (self.mpp[0] * top[1] / this[1], self.mpp[1] * top[0] / this[0])


def _downsamples(levels: list[Any]) -> tuple[float, ...]:
    top = levels[0].shape
    return tuple((top[0] / lv.shape[0] + top[1] / lv.shape[1]) / 2 for lv in levels)


def _tiff_slide(path: Path) -> Slide:
    import tifffile

    from pixelcam.slide.mpp import tiff_mpp

    levels = open_pyramid(path)
    try:
        with tifffile.TiffFile(path) as tif:
            mpp = tiff_mpp(tif)
    except Exception:  # noqa: BLE001 - the levels were read: an odd tag only loses the size
        mpp = None
    return Slide(str(path), levels, mpp, _downsamples(levels), "tifffile", {})


def _openslide_slide(path: Path) -> Slide:
    from pixelcam.slide.mpp import openslide_mpp
    from pixelcam.slide.scanner import open_openslide

    info = open_openslide(path)
    mpp = openslide_mpp(info.properties)
    return Slide(str(path), info.levels, mpp, info.downsamples, "openslide", info.properties)


def open_slide(path: str | Path, backend: str | None = None) -> Slide:
    """The slide at ``path`` through tifffile when it can read it (TIFF, OME-TIFF, SVS),
    else through OpenSlide (the scanner formats, and TIFF/SVS whose tiles tifffile cannot
    decode). ``backend``: ``"tifffile"`` or ``"openslide"`` to use only that reader.
    Raises :class:`~pixelcam.errors.InputError` naming the file, with both readers'
    reasons when neither can read it."""
    if backend not in (None, "tifffile", "openslide"):
        raise InputError(f"backend must be 'tifffile' or 'openslide', got {backend!r}")
    path = _check_path(path)
    suffix = path.suffix.lower()
    if backend == "openslide" or (backend is None and suffix in OPENSLIDE_EXTENSIONS):
        return _openslide_slide(path)
    if backend == "tifffile":
        return _tiff_slide(path)
    if suffix not in TIFF_EXTENSIONS:
        raise InputError(f"not a slide file: {path} (slides are {', '.join(SLIDE_EXTENSIONS)})")
    try:
        return _tiff_slide(path)
    except InputError as tiff_error:
        try:
            return _openslide_slide(path)
        except InputError as os_error:
            raise InputError(f"{tiff_error}; {os_error}") from tiff_error
