"""The tile engine of :mod:`pixelcam.slide`: read tiles, run them through a model, and the
runners that do both for a stream of batches.

* :func:`read_tiles`: boxes of one level (numpy, dask, zarr...) -> a ``uint8`` RGB batch.
* :func:`run_batch`: a ``uint8`` RGB batch -> its maps, at the tiles' size. The tiles are
  preprocessed by :func:`pixelcam.data.transforms.preprocess_batch`, the preprocessing of
  :func:`pixelcam.inference.predict_maps` (on the CPU the resize runs on the ``uint8``
  pixels, about 10x faster than in float and within a grey level of it), and every map
  comes from one :func:`pixelcam.cams.compute_maps` call.
* :class:`TileRunner`: what :func:`~pixelcam.slide.predict_slide` talks to: batches of
  tile boxes in, their maps out in the same order. :class:`LocalRunner` runs the model in
  this process; :class:`pixelcam.slide.cluster.DaskRunner` on a ``dask.distributed``
  cluster.

This module imports nothing else of :mod:`pixelcam.slide` and no training code.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch

    from pixelcam.cams.base import CAMMethod

__all__ = ["Box", "LocalRunner", "TileRunner", "model_device", "read_tiles", "run_batch"]

#: A tile's box ``(y0, y1, x0, x1)`` in pixels of its level.
Box = tuple[int, int, int, int]


def read_tiles(arr: Any, boxes: Sequence[Box], scheduler: str = "sync") -> np.ndarray:
    """The tiles of ``boxes`` in ``arr`` as one RGB batch.

    Args:
        arr: one level ``(Y, X[, S])``: numpy, dask, zarr... (gray, RGBA, 16-bit and float
            pixels are converted by :func:`pixelcam.data.io.to_rgb_uint8`).
        boxes: ``(y0, y1, x0, x1)`` of each tile, all of one size.
        scheduler: the dask scheduler of a dask ``arr`` (``"sync"``, ``"threads"``...).

    Returns:
        ``uint8`` ``[B, h, w, 3]``.
    """
    from pixelcam.data.io import to_rgb_uint8

    crops = [arr[y0:y1, x0:x1] for y0, y1, x0, x1 in boxes]
    if any(hasattr(c, "dask") for c in crops):
        import dask

        crops = dask.compute(*crops, scheduler=scheduler)
    out = None
    for k, crop in enumerate(crops):
        crop = np.asarray(crop)
        if not (crop.dtype == np.uint8 and crop.ndim == 3 and crop.shape[-1] == 3):
            crop = to_rgb_uint8(crop, name=f"tile {tuple(boxes[k])}")
        if out is None:
            out = np.empty((len(crops), *crop.shape), np.uint8)
        out[k] = crop
    return out


def model_device(model: Any, device: Any = None) -> torch.device:
    """The device to run ``model`` on: ``device`` resolved by
    :func:`pixelcam.device.resolve_device` (``"auto"``, ``"cuda:1"``, a ``torch.device``...;
    the model is moved there), or where the model's parameters are when None."""
    if device is not None:
        from pixelcam.device import resolve_device

        model.to(resolve_device(str(device)))
    return next(model.parameters()).device


def run_batch(
    model: Any,
    tiles: np.ndarray,
    methods: Sequence[str | CAMMethod],
    model_input: int | None = 224,
    device: Any = None,
    target: int | None = None,
) -> dict[str, np.ndarray]:
    """Maps of a batch of RGB tiles, at the tiles' size.

    Args:
        model: a pixelcam model (run in eval mode).
        tiles: ``uint8`` ``[B, h, w, 3]`` (:func:`read_tiles`).
        methods: map names or :class:`~pixelcam.cams.base.CAMMethod` instances, all
            computed from one forward.
        model_input: side the tiles are resized to (None: their own size).
        device: where the batch runs; default: where the model's parameters are (the model
            is not moved: see :func:`model_device`).
        target: the class class-specific maps explain (default: each tile's prediction).

    Returns:
        name -> float32 ``[B, h, w]`` in [0, 1].
    """
    from pixelcam.cams.compute import compute_maps
    from pixelcam.data.transforms import preprocess_batch

    if device is None:
        device = next(model.parameters()).device
    size = (int(tiles.shape[1]), int(tiles.shape[2]))
    x = preprocess_batch(tiles, model_input, device=device, uint8_resize=True)
    res = compute_maps(model, x, list(methods), target=target, size=size)
    return {k: v.detach().cpu().numpy() for k, v in res.maps.items()}  # in [0, 1] already


@runtime_checkable
class TileRunner(Protocol):
    """Runs batches of tiles through a model: what :func:`~pixelcam.slide.predict_slide`
    talks to, locally (:class:`LocalRunner`) or on a cluster
    (:class:`~pixelcam.slide.cluster.DaskRunner`).

    ``stats`` holds the timings of the runs so far (``model_seconds``,
    ``read_wait_seconds``: time waiting for tiles or results) and ``scheduler`` (what ran
    them), plus what a runner adds; :func:`~pixelcam.slide.predict_slide` puts them in its
    summary.
    """

    stats: dict[str, Any]

    def run(self, batches: Sequence[Sequence[Box]]) -> Iterator[dict[str, np.ndarray]]:
        """The maps (name -> float32 ``[B, h, w]``) of each batch of tile boxes, in the
        order of ``batches``. Closing the iterator early stops the work."""
        ...

    def close(self) -> None:
        """Release what the runner holds (a cluster connection...)."""
        ...


class LocalRunner:
    """:class:`TileRunner` in this process: the model runs here while the next batch is
    read in a background thread.

    Args:
        model: the model (moved to ``device`` when given).
        arr: the level the boxes index (numpy, dask...).
        methods: names or :class:`~pixelcam.cams.base.CAMMethod` instances.
        model_input: side the tiles are resized to (None: their own).
        device: where to run (:func:`model_device`); default: where the model is.
        target: the class class-specific maps explain (default: each tile's prediction).
        scheduler: the local dask scheduler of the reads, ``"threads"`` or ``"sync"``.
    """

    def __init__(
        self,
        model: Any,
        arr: Any,
        methods: Sequence[str | CAMMethod],
        *,
        model_input: int | None = 224,
        device: Any = None,
        target: int | None = None,
        scheduler: str = "threads",
    ) -> None:
        self.model = model
        self.arr = arr
        self.methods = list(methods)
        self.model_input = model_input
        self.device = model_device(model, device)
        self.target = target
        self.scheduler = scheduler
        self.stats: dict[str, Any] = {
            "model_seconds": 0.0,
            "read_wait_seconds": 0.0,
            "scheduler": scheduler,
        }

    def run(self, batches: Sequence[Sequence[Box]]) -> Iterator[dict[str, np.ndarray]]:
        """See :meth:`TileRunner.run`."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pixelcam-tiles") as pool:
            pending = None
            if batches:
                pending = pool.submit(read_tiles, self.arr, batches[0], self.scheduler)
            for i in range(len(batches)):
                t0 = time.perf_counter()
                tiles = pending.result()
                self.stats["read_wait_seconds"] += time.perf_counter() - t0
                if i + 1 < len(batches):
                    pending = pool.submit(read_tiles, self.arr, batches[i + 1], self.scheduler)
                t0 = time.perf_counter()
                maps = run_batch(
                    self.model, tiles, self.methods, self.model_input, self.device, self.target
                )
                self.stats["model_seconds"] += time.perf_counter() - t0
                yield maps

    def close(self) -> None:
        """Nothing to release."""
