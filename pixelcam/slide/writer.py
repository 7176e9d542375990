"""Streaming writer of pyramidal tiled TIFF files (maps of whole slides, or slides).

:class:`PyramidWriter` takes an image as consecutive row strips of any height and writes
a tiled TIFF (``tile`` x ``tile`` tiles, zlib) whose full-resolution page holds the lower
levels in SubIFDs, each level half the size of the one above (2x2 mean, rounded for
integer types) down to the first that fits in one tile. :func:`pixelcam.slide.open_pyramid`
and napari (the plugin's reader, as a multiscale layer) open it; tifffile reads it as a
``shaped`` series with ``levels``.

Nothing of image size is held in memory: a background thread compresses the tiles of one
strip of ``tile`` rows while the caller computes the next ones (a bounded queue holds a few
strips), and each strip is downsampled on the way into a raw temporary file, from which the
next level is written once the full resolution is done (then the next, and so on: each is a
quarter of the one above). The file is written as ``<name>.part`` and renamed when
complete, so a failed or interrupted write leaves no truncated TIFF behind.

With a pixel size (``mpp``, µm) the file is an OME-TIFF: ``PhysicalSizeX/Y`` in µm on the
image, the JSON metadata in its ``Description``, and every level's resolution tags in
pixels per centimetre, so QuPath, Fiji, napari and :func:`pixelcam.slide.read_mpp` all see
the size. :func:`stored_metadata` reads the JSON back from either layout.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import tempfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pixelcam.errors import InputError, PixelCAMError

__all__ = ["PyramidWriter", "downsample2", "pyramid_shapes", "stored_metadata", "write_pyramid"]

_END = object()
_ABORT = object()


def pyramid_shapes(shape: Sequence[int], tile: int = 256) -> list[tuple[int, int]]:
    """``(height, width)`` of each level: halved (rounding up) until both fit in ``tile``."""
    h, w = int(shape[0]), int(shape[1])
    shapes = [(h, w)]
    while h > tile or w > tile:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        shapes.append((h, w))
    return shapes


def downsample2(strip: np.ndarray) -> np.ndarray:
    """2x2 mean of ``(H, W[, C])`` (an odd last row/column is averaged with itself).

    Float input stays float; integer input is rounded back to its type.
    """
    a = np.asarray(strip)
    pad = [(0, a.shape[0] % 2), (0, a.shape[1] % 2)] + [(0, 0)] * (a.ndim - 2)
    if any(p[1] for p in pad):
        a = np.pad(a, pad, mode="edge")
    f = a.astype(np.float32, copy=False)
    out = f[0::2, 0::2] + f[1::2, 0::2]
    out += f[0::2, 1::2]
    out += f[1::2, 1::2]
    out *= 0.25
    if np.issubdtype(a.dtype, np.integer):
        info = np.iinfo(a.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(a.dtype)
    return out.astype(a.dtype, copy=False)


class PyramidWriter:
    """Write an image strip by strip into a pyramidal tiled TIFF (see the module docstring).

    ``shape``: ``(H, W)`` or ``(H, W, C)``; ``photometric``: ``"minisblack"`` (default for
    one channel) or ``"rgb"`` (default for 3 channels); ``metadata``: a JSON-able dict stored
    with the image (tifffile's ``shaped_metadata``); ``compression_level``: zlib level of
    the tiles that are not constant (0 stores them: float maps shrink by only ~15 % at
    level 1, for ~30x the time; constant tiles are always compressed); ``mpp``: ``(x, y)``
    µm per pixel of the full resolution, or None (then a plain TIFF); ``tmp_dir``: where the
    temporary lower levels go (default: beside the output). Use as a context manager, or
    call :meth:`close` (or :meth:`abort` on failure) yourself.
    """

    def __init__(
        self,
        path: str | Path,
        shape: Sequence[int],
        dtype: Any = np.float32,
        *,
        tile: int = 256,
        compression_level: int = 1,
        photometric: str | None = None,
        metadata: dict[str, Any] | None = None,
        tmp_dir: str | Path | None = None,
        queue_strips: int = 2,
        mpp: Sequence[float] | None = None,
    ) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise InputError(f"cannot write an image of shape {shape} as a pyramid: expected "
                             "(H, W) or (H, W, C)")  # fmt: skip
        if tile < 16 or tile % 16:
            raise InputError(f"TIFF tiles must be a positive multiple of 16, got {tile}")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise InputError(f"output folder does not exist: {self.path.parent}")
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.tile = int(tile)
        self.levels = pyramid_shapes(shape, self.tile)
        channels = shape[2] if len(shape) == 3 else 1
        if photometric is None:
            photometric = "rgb" if channels in (3, 4) else "minisblack"
        if not 0 <= int(compression_level) <= 9:
            raise InputError(f"zlib compression level must be in 0..9, got {compression_level}")
        self._level = int(compression_level)
        self._stored = self.dtype.newbyteorder("<")  # tifffile writes little-endian files
        self._constant: dict[bytes, bytes] = {}  # encoded constant tiles, by value
        self._options: dict[str, Any] = {
            "dtype": self.dtype,
            "tile": (self.tile, self.tile),
            "compression": "zlib",  # the tiles come zlib-encoded (see _encode)
            "photometric": photometric,
        }
        if channels == 4 and photometric == "rgb":
            self._options["extrasamples"] = ("unassalpha",)
        self._metadata = dict(metadata or {})
        self._mpp = None if mpp is None else (float(mpp[0]), float(mpp[1]))
        nbytes = sum(h * w for h, w in self.levels) * channels * self.dtype.itemsize
        self._bigtiff = nbytes > 2**31
        self._part = self.path.with_name(self.path.name + ".part")
        self._tmp = tempfile.TemporaryDirectory(
            prefix="pixelcam-pyramid-", dir=tmp_dir if tmp_dir is not None else self.path.parent
        )
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_strips)))
        self._rows = 0
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pixelcam-pyramid", daemon=True)
        self._thread.start()

    # -- caller side -----------------------------------------------------------------------
    @property
    def rows_written(self) -> int:
        return self._rows

    def write_rows(self, rows: np.ndarray) -> None:
        """Append the next ``rows`` (``(n, W[, C])``) of the full-resolution image."""
        if self._closed:
            raise PixelCAMError(f"the pyramid writer of {self.path} is closed")
        rows = np.asarray(rows)
        if rows.ndim == len(self.shape) - 1:
            rows = rows[None]
        if rows.shape[1:] != self.shape[1:]:
            raise InputError(
                f"rows of shape {rows.shape} do not fit an image of shape {self.shape}"
            )
        if self._rows + rows.shape[0] > self.shape[0]:
            raise InputError(
                f"{self._rows + rows.shape[0]} rows written to an image of {self.shape[0]} rows"
            )
        for y in range(0, rows.shape[0], self.tile):  # queue items of at most one strip
            self._put(np.array(rows[y : y + self.tile], dtype=self.dtype, order="C", copy=True))
        self._rows += rows.shape[0]

    def _put(self, item: Any) -> None:
        while True:
            self._raise_if_failed()
            if not self._thread.is_alive():
                return  # done: tifffile stops reading after the last tile it expects
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise PixelCAMError(
                f"writing {self.path} failed: {type(self._error).__name__}: {self._error}"
            ) from self._error

    def close(self) -> Path:
        """Finish the file (all rows must have been written); returns its path."""
        if self._closed:
            return self.path
        if self._rows != self.shape[0]:
            self.abort()
            raise InputError(
                f"only {self._rows} of {self.shape[0]} rows were written to {self.path}"
            )
        try:
            self._put(_END)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._thread.join()
        self._tmp.cleanup()
        if self._error is not None:
            with contextlib.suppress(OSError):
                self._part.unlink()
            raise PixelCAMError(
                f"writing {self.path} failed: {type(self._error).__name__}: {self._error}"
            ) from self._error
        os.replace(self._part, self.path)
        return self.path

    def abort(self) -> None:
        """Stop writing and remove the partial file."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(queue.Full):
            while self._thread.is_alive():
                try:
                    self._queue.put(_ABORT, timeout=0.1)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()  # make room: the data is discarded anyway
        self._thread.join()
        self._tmp.cleanup()
        with contextlib.suppress(OSError):
            self._part.unlink()

    def __enter__(self) -> PyramidWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        import tifffile

        try:
            raws = [Path(self._tmp.name) / f"level{k}.raw" for k in range(len(self.levels))]
            ome = self._mpp is not None
            with tifffile.TiffWriter(self._part, bigtiff=self._bigtiff, ome=ome) as tw:
                with open(raws[1], "wb") if len(self.levels) > 1 else _null() as nxt:
                    tw.write(
                        self._tiles(self._queued_strips(), 0, nxt),
                        shape=self.shape,
                        subifds=len(self.levels) - 1,
                        metadata=self._ome_metadata() if ome else self._metadata,
                        **self._resolution(0),
                        **self._options,
                    )
                for k in range(1, len(self.levels)):
                    last = k == len(self.levels) - 1
                    with open(raws[k + 1], "wb") if not last else _null() as nxt:
                        strips = self._raw_strips(raws[k], k)
                        tw.write(
                            self._tiles(strips, k, nxt),
                            shape=self._level_shape(k),
                            subfiletype=1,
                            **self._resolution(k),
                            **self._options,
                        )
                    raws[k].unlink()
        except BaseException as exc:  # reported to the caller by write_rows/close
            self._error = exc
            self._drain()

    def _ome_metadata(self) -> dict[str, Any]:
        """OME keywords of tifffile: the pixel size and the JSON metadata."""
        x, y = self._mpp
        return {
            "axes": "YX" if len(self.shape) == 2 else "YXS",
            "PhysicalSizeX": x, "PhysicalSizeXUnit": "µm",
            "PhysicalSizeY": y, "PhysicalSizeYUnit": "µm",
            "Description": json.dumps(self._metadata),
        }  # fmt: skip

    def _resolution(self, k: int) -> dict[str, Any]:
        """Resolution tags of level ``k`` in pixels per centimetre (none without mpp)."""
        if self._mpp is None:
            return {}
        h, w = self.levels[k]
        x = self._mpp[0] * self.shape[1] / w
        y = self._mpp[1] * self.shape[0] / h
        return {"resolution": (1e4 / x, 1e4 / y), "resolutionunit": "CENTIMETER"}

    def _drain(self) -> None:
        """Empty the queue after a failure so that a blocked caller can go on and see it."""
        while True:
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._closed:
                    return

    def _level_shape(self, k: int) -> tuple[int, ...]:
        return self.levels[k] + self.shape[2:]

    def _queued_strips(self) -> Iterator[np.ndarray]:
        """Level-0 strips of ``tile`` rows (the last may be shorter) from the caller's rows."""
        strip = np.empty((self.tile, *self.shape[1:]), self.dtype)
        fill = 0
        while True:
            item = self._queue.get()
            if item is _ABORT:
                raise PixelCAMError("aborted")
            if item is _END:
                break
            pos = 0
            while pos < item.shape[0]:
                n = min(self.tile - fill, item.shape[0] - pos)
                strip[fill : fill + n] = item[pos : pos + n]
                fill += n
                pos += n
                if fill == self.tile:
                    yield strip
                    fill = 0
        if fill:
            yield strip[:fill]

    def _raw_strips(self, raw: Path, k: int) -> Iterator[np.ndarray]:
        shape = self._level_shape(k)
        row = math.prod(shape[1:])
        with open(raw, "rb") as fh:
            for y in range(0, shape[0], self.tile):
                n = min(self.tile, shape[0] - y)
                data = np.fromfile(fh, dtype=self.dtype, count=n * row)
                if data.size != n * row:
                    raise PixelCAMError(f"temporary level {k} of {self.path} is truncated")
                yield data.reshape((n, *shape[1:]))

    def _tiles(
        self, strips: Iterator[np.ndarray], k: int, nxt: BinaryIO | None
    ) -> Iterator[np.ndarray]:
        """The tiles of level ``k`` in row-major order (padded to full tiles); each strip
        is also downsampled into the raw file of level ``k + 1``."""
        t = self.tile
        width = self.levels[k][1]
        cols = math.ceil(width / t)
        buf = np.zeros((t, cols * t, *self.shape[2:]), self.dtype)
        for strip in strips:
            # Downsample first: tifffile stops pulling after the last tile it expects.
            if nxt is not None:
                downsample2(strip).tofile(nxt)
            n = strip.shape[0]
            buf[:n, :width] = strip
            buf[n:] = 0
            for c in range(cols):
                yield self._encode(buf[:, c * t : (c + 1) * t])

    def _encode(self, tile: np.ndarray) -> bytes:
        """One zlib-encoded tile: constant tiles (the background of a map) at level 6,
        where zlib is fast and they shrink to almost nothing, the others at the level
        asked for."""
        data = np.ascontiguousarray(tile, dtype=self._stored)
        first = data.flat[0]
        if (data == first).all():
            key = first.tobytes()
            encoded = self._constant.get(key)
            if encoded is None:
                encoded = self._constant[key] = zlib.compress(data.tobytes(), 6)
            return encoded
        return zlib.compress(data.tobytes(), self._level)


@contextlib.contextmanager
def _null() -> Iterator[None]:
    yield None


def write_pyramid(
    path: str | Path,
    image: Any,
    *,
    strip_rows: int = 1024,
    **options: Any,
) -> Path:
    """Write an array-like (numpy, memmap, dask, a lazy pyramid level) as a pyramidal TIFF.

    The image is read ``strip_rows`` rows at a time (a dask array is computed strip by
    strip), so it need not fit in memory. ``options`` go to :class:`PyramidWriter`.
    """
    shape = tuple(int(s) for s in image.shape)
    with PyramidWriter(path, shape, options.pop("dtype", image.dtype), **options) as writer:
        for y in range(0, shape[0], strip_rows):
            rows = image[y : y + strip_rows]
            if hasattr(rows, "compute"):
                rows = rows.compute()
            writer.write_rows(np.asarray(rows))
    return Path(path)


def stored_metadata(tif: Any) -> dict[str, Any]:
    """The JSON metadata a :class:`PyramidWriter` (or the plugin's map writer) stored in an
    open :class:`tifffile.TiffFile`: tifffile's ``shaped_metadata``, or the JSON in the
    OME ``Description`` of an OME-TIFF; {} when there is none."""
    if tif.shaped_metadata:
        return dict(tif.shaped_metadata[0])
    if not (tif.is_ome and tif.ome_metadata):
        return {}
    import html
    import re

    found = re.search(r"<(?:\w+:)?Description>(.*?)</(?:\w+:)?Description>", tif.ome_metadata, re.S)
    if found is None:
        return {}
    try:
        data = json.loads(html.unescape(found.group(1)))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
