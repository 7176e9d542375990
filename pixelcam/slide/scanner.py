"""Scanner formats through OpenSlide: MIRAX, Hamamatsu, Leica, Ventana, DICOM, Philips...
and SVS/TIFF files tifffile cannot decode, as lazy dask levels.

Each level is a dask array ``(Y, X, 3)`` ``uint8`` whose chunks are aligned groups of the
file's tiles (OpenSlide's ``openslide.level[k].tile-width``, default 512 px, at least
:data:`MIN_CHUNK` a side). A chunk is one ``read_region`` call; OpenSlide returns RGBA (not
premultiplied), composited here onto the slide's background colour
(``openslide.background-color``, white when absent), so pixels outside the scanned area
(transparent) are background, not black.

**Handles.** An OpenSlide handle may be used from several threads at once without locking
(OpenSlide >= 3.3.1: "an openslide_t object can be used concurrently from multiple threads
without locking"), so the chunks of one slide share one handle. Handles live in a small
pool (:class:`_HandlePool`): at most :data:`MAX_IDLE_HANDLES` open handles are kept once no
read uses them (least recently used closed first), and a handle in use is never closed
under a reader. The dask arrays hold only the path (they pickle to a ``dask.distributed``
worker, which opens its own handle).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pixelcam.errors import InputError

__all__ = [
    "MAX_IDLE_HANDLES",
    "MIN_CHUNK",
    "OPENSLIDE_EXTENSIONS",
    "OpenSlideInfo",
    "composite",
    "open_openslide",
]

#: Scanner formats read through OpenSlide only: MIRAX, Hamamatsu (NDPI, VMS, VMU), Leica,
#: Ventana, DICOM WSI, Sakura.
OPENSLIDE_EXTENSIONS: tuple[str, ...] = (
    ".mrxs", ".ndpi", ".vms", ".vmu", ".scn", ".bif", ".dcm", ".svslide",
)  # fmt: skip

#: Open OpenSlide handles kept while no read uses them.
MAX_IDLE_HANDLES = 4
#: The smallest chunk side (tiles are grouped up to it: a read per chunk, not per tile).
MIN_CHUNK = 256
_DEFAULT_TILE = 512


def _import_openslide() -> Any:
    try:
        import openslide
    except ImportError as exc:  # the binding, or its C library (openslide-bin)
        raise InputError(
            "reading scanner formats (MIRAX, NDPI, SCN, BIF, DICOM, and SVS/TIFF files "
            f"that tifffile cannot decode) needs OpenSlide: pip install openslide-python "
            f"openslide-bin ({exc})"
        ) from exc
    return openslide


class _HandlePool:
    """OpenSlide handles by file identity, shared by threads, idle ones bounded (module
    docstring)."""

    def __init__(self, max_idle: int = MAX_IDLE_HANDLES) -> None:
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._handles: OrderedDict[tuple, Any] = OrderedDict()
        self._users: dict[tuple, int] = {}

    @contextmanager
    def use(self, key: tuple) -> Iterator[Any]:
        """An open handle of ``key`` ``(path, mtime_ns, size)`` for the ``with`` block."""
        with self._lock:
            handle = self._handles.pop(key, None)
            if handle is not None:
                self._handles[key] = handle  # most recently used last
            self._users[key] = self._users.get(key, 0) + 1
        try:
            if handle is None:
                handle = _open_handle(key[0])
                with self._lock:
                    current = self._handles.get(key)
                    if current is None:
                        self._handles[key] = handle
                    else:  # another thread opened it meanwhile: use theirs
                        handle.close()
                        handle = current
            yield handle
        finally:
            with self._lock:
                self._users[key] -= 1
                if not self._users[key]:
                    del self._users[key]
                self._trim()

    def _trim(self) -> None:
        idle = [k for k in self._handles if k not in self._users]
        for key in idle[: max(0, len(self._handles) - self.max_idle)]:
            self._handles.pop(key).close()

    def open_count(self) -> int:
        with self._lock:
            return len(self._handles)

    def close_all(self) -> None:
        """Close every idle handle (tests; a handle in use is closed when released)."""
        with self._lock:
            for key in [k for k in self._handles if k not in self._users]:
                self._handles.pop(key).close()


POOL = _HandlePool()


def _open_handle(path: str) -> Any:
    openslide = _import_openslide()
    try:
        return openslide.OpenSlide(path)
    except openslide.OpenSlideUnsupportedFormatError as exc:
        raise InputError(f"OpenSlide does not recognise the slide format of {path}") from exc
    except Exception as exc:  # OpenSlideError and friends: a corrupt or incomplete slide
        raise InputError(f"OpenSlide cannot open the slide {path}: {exc}") from exc


@dataclass(frozen=True)
class OpenSlideInfo:
    """What :func:`open_openslide` found: the levels (dask), their ``downsamples``, the
    ``properties`` and the vendor."""

    levels: list[Any]
    downsamples: tuple[float, ...]
    properties: dict[str, str]
    vendor: str


def _background(properties: Mapping[str, str]) -> np.ndarray:
    text = properties.get("openslide.background-color", "FFFFFF")
    try:
        return np.array([int(text[i : i + 2], 16) for i in (0, 2, 4)], np.float32)
    except (ValueError, IndexError):
        return np.full(3, 255.0, np.float32)


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """RGBA (straight alpha, as openslide-python returns it) over ``background`` -> RGB
    ``uint8``."""
    rgba = np.asarray(rgba)
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha[..., None].astype(np.float32) / 255.0
    out = rgba[..., :3].astype(np.float32) * a + background * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


class _LevelArray:
    """An array-like ``(Y, X, 3)`` over one OpenSlide level, read with ``read_region``."""

    def __init__(self, key: tuple, level: int, shape: tuple[int, int],
                 downsample: float, background: np.ndarray) -> None:  # fmt: skip
        self.key, self.level, self.downsample = key, level, downsample
        self.shape = (int(shape[0]), int(shape[1]), 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self.background = background

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        (y0, y1, _), (x0, x1, _) = (k.indices(n) for k, n in zip(key[:2], self.shape[:2]))
        h, w = max(0, y1 - y0), max(0, x1 - x0)
        if h == 0 or w == 0:
            return np.zeros((h, w, 3), np.uint8)[..., key[2]]
        ds = self.downsample
        location = (int(round(x0 * ds)), int(round(y0 * ds)))  # level-0 coordinates
        try:
            with POOL.use(self.key) as handle:
                region = handle.read_region(location, self.level, (w, h))
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"OpenSlide cannot read level {self.level} of {self.key[0]} at {location}: {exc}"
            ) from exc
        return composite(np.asarray(region), self.background)[..., key[2]]


def _chunk(side: int, tile: int) -> int:
    return min(side, max(tile, tile * math.ceil(MIN_CHUNK / max(tile, 1))))


def _tile_side(properties: Mapping[str, str], level: int, axis: str) -> int:
    try:
        return max(1, int(properties.get(f"openslide.level[{level}].tile-{axis}", _DEFAULT_TILE)))
    except ValueError:
        return _DEFAULT_TILE


def open_openslide(path: str | Path) -> OpenSlideInfo:
    """The levels of a slide OpenSlide reads, as lazy dask arrays (module docstring).

    Raises :class:`~pixelcam.errors.InputError`: OpenSlide missing (how to install it), the
    format not recognised, or the slide unreadable, naming the file.
    """
    import dask.array as da
    from dask.base import tokenize

    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    with POOL.use(key) as handle:
        properties = dict(handle.properties)
        dims = list(handle.level_dimensions)
        downsamples = tuple(float(d) for d in handle.level_downsamples)
    background = _background(properties)
    levels = []
    for k, (width, height) in enumerate(dims):
        th, tw = _tile_side(properties, k, "height"), _tile_side(properties, k, "width")
        chunks = (_chunk(height, th), _chunk(width, tw), 3)
        array = _LevelArray(key, k, (height, width), downsamples[k], background)
        levels.append(da.from_array(
            array, chunks=chunks, name=f"pixelcam-openslide-{tokenize(*key, k)}",
            asarray=False, fancy=False, lock=False, meta=np.empty((0, 0, 0), np.uint8),
        ))  # fmt: skip
    vendor = properties.get("openslide.vendor", "unknown")
    return OpenSlideInfo(levels, downsamples, properties, vendor)
