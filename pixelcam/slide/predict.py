"""Maps of a whole slide, tile by tile, written as pyramidal TIFF files.

:func:`predict_slide` reads one level of a slide lazily (:func:`pixelcam.slide.open_pyramid`),
finds the tissue on a low-resolution level (:mod:`pixelcam.slide.tissue`), and runs the
model on the overlapping tiles (:class:`~pixelcam.slide.tiling.TileGrid`) that hold tissue,
``batch_size`` tiles per :func:`pixelcam.cams.compute_maps` call (one forward for all the
methods). Each tile is preprocessed by :func:`pixelcam.data.transforms.preprocess_batch`,
as :func:`pixelcam.inference.predict_maps` does (resize to ``model_input``: bilinear,
antialiased when shrinking; ImageNet normalisation; on the CPU the resize runs on the
``uint8`` pixels, about 10x faster than in float and within a grey level of it); its maps
come back at the tile's size and are blended across the seams
(:class:`~pixelcam.slide.tiling.StripBlender`). The tiles are read and run by a
:class:`~pixelcam.slide.engine.TileRunner` (:mod:`pixelcam.slide.engine`).
Background tiles are not run: their pixels are 0 in the maps.

Memory does not grow with the slide's height: the next batch of tiles is read (by dask, in
a background thread) while the model runs on the current one, the blender holds about one
tile row of the slide's width, and finished rows go to one
:class:`~pixelcam.slide.writer.PyramidWriter` per method, which compresses them in its own
thread. Only the tissue thumbnail (at most about 4 M pixels) depends on the slide's area.

**Past one machine.** With ``scheduler`` a ``dask.distributed`` address
(``tcp://host:8786``...) or a ``distributed.Client``, the model runs on the cluster's
workers, a task per batch of tiles, while the client detects the tissue, blends and writes
as above (:mod:`pixelcam.slide.cluster`: the model is sent once per worker, a slide file is
read by the workers at the client's path, a few batches are in flight at a time).

Maps are at the resolution of the level read: ``level=1`` of a 40x slide gives maps at 20x.

**Microns.** With ``model_mpp`` (the checkpoint's training pixel size) and a slide whose
pixel size is known (its metadata, or ``mpp``), the level is chosen by
:func:`pixelcam.slide.mpp.choose_level` (the coarsest level not coarser than the model) and
``tile``/``overlap`` are in pixels at the model's scale: a tile covers ``tile / factor``
pixels of the level (``factor = level mpp / model mpp``), resized to ``model_input`` as
before, so the model sees tissue at the pixel size it was trained at. When either pixel size
is unknown the level is ``level`` (default 0) at its own scale, and the summary's
``scale["note"]`` says so. Maps written with a known pixel size are OME-TIFFs carrying it.
Class-specific maps (CAM, GradCAM++, LayerCAM...) explain each tile's own predicted class
unless ``target`` is given; normalised maps (min-max per tile) are less comparable from one
tile to the next than PixelCAM's probabilities, which the blending cannot fix.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pixelcam.errors import InputError
from pixelcam.slide.cluster import DaskRunner, is_address, is_client
from pixelcam.slide.engine import LocalRunner, TileRunner
from pixelcam.validation import check_input_size

__all__ = ["LARGE_SIDE", "SCHEDULERS", "needs_tiling", "output_paths", "predict_slide"]

#: Local dask schedulers (the tiles are read with it, the model runs in this process).
#: ``predict_slide`` also takes a ``dask.distributed`` address or ``distributed.Client``.
SCHEDULERS: tuple[str, ...] = ("threads", "sync")

_THUMBNAIL_PIXELS = 2**22

#: Images with a side above this many pixels are predicted tile by tile.
LARGE_SIDE = 4096


def needs_tiling(path: str | Path, max_side: int = LARGE_SIDE) -> bool:
    """Whether ``path`` should go through :func:`predict_slide` rather than one forward:
    a pyramidal TIFF/SVS, any SVS or scanner format (OpenSlide's), or an image with a side
    above ``max_side``.

    Only the file's header is read. A file that cannot be read answers False (the plain
    reader then reports it).
    """
    from pixelcam.slide.reader import OPENSLIDE_EXTENSIONS, is_pyramidal

    path = Path(path)
    if path.suffix.lower() in (".svs", *OPENSLIDE_EXTENSIONS) or is_pyramidal(path):
        return True
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape if tif.series else ()
                axes = tif.series[0].axes if tif.series else ""
            sides = [n for n, a in zip(shape, axes) if a in "YX"]
        else:
            from PIL import Image

            with Image.open(path) as im:
                sides = list(im.size)
    except Exception:
        return False
    return bool(sides) and max(sides) > max_side


def output_paths(out_path: str | Path, methods: Sequence[str]) -> dict[str, Path]:
    """``<out_stem>_<method>.tif`` beside ``out_path`` (``.tif``/``.tiff``/``.ome.tif``
    suffixes dropped from the stem) for each method."""
    out_path = Path(out_path)
    name = out_path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return {m: out_path.with_name(f"{name}_{m}.tif") for m in methods}


def _open_levels(source: Any) -> tuple[list[Any], str, tuple[float, float] | None]:
    """The levels of ``source``, its name and its pixel size ``(x, y)`` µm (or None)."""
    from pixelcam.slide.mpp import read_mpp
    from pixelcam.slide.reader import SLIDE_EXTENSIONS, open_slide

    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.suffix.lower() in SLIDE_EXTENSIONS:
            slide = open_slide(path)
            return slide.levels, str(path), slide.mpp
        from pixelcam.data.io import read_image

        return [read_image(path)], str(path), read_mpp(path)  # a PNG/JPEG/BMP: decoded whole
    if hasattr(source, "shape") and hasattr(source, "dtype"):
        return [source], "array", None
    if isinstance(source, (list, tuple)) and source and all(hasattr(a, "shape") for a in source):
        return list(source), "pyramid", None
    raise InputError(
        f"a slide must be a file path, an array or a list of pyramid levels, got "
        f"{type(source).__name__}"
    )


def _check_level(levels: list[Any], level: int, name: str) -> Any:
    if not 0 <= int(level) < len(levels):
        raise InputError(f"level {level} does not exist in {name} ({len(levels)} levels)")
    arr = levels[int(level)]
    shape = tuple(arr.shape)
    if not (len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 2, 3, 4))):
        raise InputError(
            f"level {level} of {name} has shape {shape}: expected a 2-D gray or RGB(A) image "
            "(Y, X[, S])"
        )
    return arr


def _check_scheduler(scheduler: Any) -> Any:
    if scheduler in SCHEDULERS or is_client(scheduler):
        return scheduler
    if is_address(scheduler):
        return scheduler.strip()
    shown = scheduler if isinstance(scheduler, str) else type(scheduler).__name__
    raise InputError(
        f"scheduler must be one of {', '.join(SCHEDULERS)}, a dask.distributed scheduler "
        f"address (tcp://host:port, tls://..., inproc://...) or a distributed.Client, "
        f"got {shown!r}"
    )


def predict_slide(
    model: Any,
    source: Any,
    out_path: str | Path,
    methods: Sequence[str] = ("pixelcam",),
    *,
    level: int | None = None,
    tile: int = 512,
    overlap: int = 64,
    model_input: int | None = 224,
    batch_size: int = 16,
    min_tissue: float = 0.05,
    device: Any = None,
    progress: Callable[[int, int], None] | None = None,
    scheduler: Any = "threads",
    window: str = "hann",
    target: int | None = None,
    compression_level: int = 0,
    mpp: float | Sequence[float] | None = None,
    model_mpp: float | None = None,
) -> dict[str, Any]:
    """Maps of a whole slide as pyramidal float32 TIFFs ``<out_stem>_<method>.tif``.

    ``source``: a slide file (TIFF/OME-TIFF/SVS, read lazily; any other image file is
    decoded whole), an array ``(Y, X[, S])`` (numpy, dask...), or a list of pyramid levels.
    ``level``: the level to read (maps come at its resolution; None: chosen by microns when
    both pixel sizes are known, else 0). ``tile``/``overlap``: tile side and overlap in
    pixels of that level, or at the model's scale when both pixel sizes are known (module
    docstring). ``mpp``: the slide's pixel size in µm (one number or ``(x, y)``), for files
    that carry none or a wrong one; ``model_mpp``: the model's training pixel size (the
    checkpoint's meta ``"mpp"``). ``model_input``: side the tiles are resized
    to (None: the tile size). ``min_tissue``: minimal tissue fraction of a processed tile
    (0 processes every tile). ``device``: where to run (the model is moved there; default:
    where the model is; on a cluster: the workers' device, default CUDA where a worker has
    it, else its CPU). ``progress(done, total)``: called after each batch, in processed
    tiles. ``scheduler``: ``"threads"`` or ``"sync"``: the local dask scheduler of the tile
    reads, which run in a background thread while the model runs here (``"sync"`` was ~10 %
    faster on 2 cores); or a ``dask.distributed`` scheduler address (``tcp://host:port``,
    ``tls://...``, ``inproc://...``; an unreachable one raises an
    :class:`~pixelcam.errors.InputError` within
    :data:`~pixelcam.slide.cluster.CONNECT_TIMEOUT` seconds) or a ``distributed.Client``:
    the model then runs on the cluster's workers (see :mod:`pixelcam.slide.cluster`; the
    workers must see a slide file at the same path as here). ``window``: the seam blending
    window (:data:`~pixelcam.slide.tiling.WINDOWS`).
    ``target``: the class class-specific maps explain (default: each tile's prediction).
    ``compression_level``: zlib level of the map tiles that are not constant (default 0,
    stored: float maps barely compress and zlib would cost more CPU than a small model;
    the constant background tiles are always compressed).

    Returns a summary: ``tiles_total``, ``tiles_processed``, ``tiles_skipped``,
    ``seconds`` (wall time, everything included), ``tiles_per_s`` (processed tiles per
    second), ``model_seconds`` (preprocessing and :func:`compute_maps`),
    ``read_wait_seconds`` (waiting for tiles), ``tissue_seconds``, ``shape`` (of the maps),
    ``level``, ``scale`` (``model_mpp``, ``slide_mpp``, ``level_mpp``, ``factor``,
    ``tile_read``: the tile side read in level pixels, ``note``: why the scale is not
    matched, or None), ``outputs`` (method -> path) and ``scheduler`` (``"threads"``, ``"sync"`` or
    the address of the dask.distributed scheduler). On a cluster, ``model_seconds`` and
    ``read_seconds`` (tile reads) are summed over the workers' tasks, ``read_wait_seconds``
    is the client's time waiting for results, and ``workers``, ``threads`` (worker threads)
    and ``in_flight`` (most batches submitted at a time) describe the cluster.
    """
    from pixelcam.cams.compute import resolve_methods
    from pixelcam.slide.tiling import TileGrid

    start = time.perf_counter()
    scheduler = _check_scheduler(scheduler)
    _check_options(batch_size, model_input, min_tissue)
    insts = resolve_methods(model, list(methods))
    levels, source_name, slide_mpp = _open_levels(source)
    scale = _plan_scale(levels, level, _slide_mpp(mpp, slide_mpp), model_mpp, tile, overlap)
    level = scale["level"]
    if model_input is None and scale["factor"] != 1.0:
        model_input = int(tile)  # the tile at the model's scale, not the level's pixels
    arr = _check_level(levels, level, source_name)
    grid = TileGrid.from_shape(arr.shape, scale["tile_read"], scale["overlap_read"])
    runner = _make_runner(
        scheduler, model, insts, source, arr, int(level),
        model_input=model_input, device=device, target=target,
    )  # fmt: skip
    try:
        tissue_start = time.perf_counter()
        keep = _tissue_tiles(levels, int(level), grid, grid.tile_h, min_tissue, scheduler)
        tissue_seconds = time.perf_counter() - tissue_start
        jobs = [(r, c) for r, c in grid if keep[r, c]]
        paths = output_paths(out_path, [m.name for m in insts])
        meta = {"source": source_name, "level": int(level), "tile": grid.tile_h}
        meta["overlap"] = grid.overlap
        meta["mpp"] = scale["level_mpp"]
        _blend_and_write(
            runner, grid, jobs, keep, paths, meta, batch_size=batch_size, window=window,
            compression_level=compression_level, progress=progress,
        )  # fmt: skip
    finally:
        runner.close()
    seconds = time.perf_counter() - start
    return {
        "tiles_total": len(grid),
        "tiles_processed": len(jobs),
        "tiles_skipped": len(grid) - len(jobs),
        "seconds": seconds,
        "tiles_per_s": len(jobs) / seconds if seconds > 0 else float("nan"),
        "tissue_seconds": tissue_seconds,
        "shape": (grid.height, grid.width),
        "level": int(level),
        "scale": {k: v for k, v in scale.items() if k not in ("level", "overlap_read")},
        "outputs": {n: str(p) for n, p in paths.items()},
        **runner.stats,  # model_seconds, read_wait_seconds, scheduler (+ the cluster's)
    }


def _slide_mpp(
    given: float | Sequence[float] | None, found: tuple[float, float] | None
) -> tuple[float, float] | None:
    """The caller's pixel size (``--mpp``) over the file's."""
    from pixelcam.slide.mpp import check_mpp

    if given is None:
        return found
    if isinstance(given, (int, float, str)):
        value = check_mpp(given, "mpp")
        return (value, value)
    x, y = (check_mpp(v, "mpp") for v in given)
    return (x, y)


def _plan_scale(
    levels: list[Any], level: int | None, slide_mpp: tuple[float, float] | None,
    model_mpp: float | None, tile: int, overlap: int,
) -> dict[str, Any]:  # fmt: skip
    """The level to read, the tile and overlap in its pixels, and what was decided
    (:func:`pixelcam.slide.mpp.choose_level`; the module docstring)."""
    from pixelcam.slide.mpp import check_mpp, choose_level, scale_note

    if model_mpp is not None:
        model_mpp = check_mpp(model_mpp, "model mpp")
    plan: dict[str, Any] = {"model_mpp": model_mpp, "slide_mpp": slide_mpp, "level_mpp": None,
                            "factor": 1.0, "note": None}  # fmt: skip
    if level is not None and not 0 <= int(level) < len(levels):  # _check_level names it
        return {**plan, "level": int(level), "tile_read": tile, "overlap_read": overlap}
    note = scale_note(slide_mpp, model_mpp, f"reading level {level or 0} at its own scale")
    if note is not None:
        plan["level"] = 0 if level is None else int(level)
        if slide_mpp is not None:
            plan["level_mpp"] = _level_mpp(levels, plan["level"], slide_mpp)
        return {**plan, "note": note, "tile_read": tile, "overlap_read": overlap}
    per_level = [float(np.mean(_level_mpp(levels, k, slide_mpp))) for k in range(len(levels))]
    if level is None:
        choice = choose_level(per_level, model_mpp)
        level, factor = choice.level, choice.factor
    else:
        factor = per_level[int(level)] / model_mpp
        factor = 1.0 if abs(factor - 1.0) <= 0.02 else factor
    read = max(16, round(tile / factor))
    plan.update(level=int(level), factor=factor, tile_read=read,
                level_mpp=_level_mpp(levels, int(level), slide_mpp),
                overlap_read=min(round(overlap / factor), read // 2))  # fmt: skip
    return plan


def _level_mpp(levels: list[Any], k: int, mpp: tuple[float, float]) -> tuple[float, float]:
    top, this = levels[0].shape, levels[k].shape
    return (mpp[0] * top[1] / this[1], mpp[1] * top[0] / this[0])


def _check_options(batch_size: int, model_input: int | None, min_tissue: float) -> None:
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, got {batch_size}")
    check_input_size(model_input, "model_input", allow_none=True)
    if not 0.0 <= float(min_tissue) <= 1.0:
        raise InputError(f"min_tissue must be a fraction in [0, 1], got {min_tissue}")


def _make_runner(
    scheduler: Any,
    model: Any,
    insts: list[Any],
    source: Any,
    arr: Any,
    level: int,
    **options: Any,
) -> TileRunner:
    """A :class:`LocalRunner` for a local scheduler, else a :class:`DaskRunner` (connected
    here: an unreachable scheduler fails before any work). ``options``: ``model_input``,
    ``device``, ``target``."""
    from pixelcam.slide.reader import SLIDE_EXTENSIONS

    if scheduler in SCHEDULERS:
        return LocalRunner(model, arr, insts, scheduler=scheduler, **options)
    slide_path = None  # a slide file the workers read themselves
    if isinstance(source, (str, Path)) and Path(source).suffix.lower() in SLIDE_EXTENSIONS:
        slide_path = Path(source).resolve()
    return DaskRunner(scheduler, model, insts, arr, slide_path=slide_path, level=level, **options)


def _tissue_tiles(
    levels: list[Any], level: int, grid: Any, tile: int, min_tissue: float, scheduler: Any
) -> np.ndarray:
    """Which tiles of ``grid`` hold at least ``min_tissue`` tissue (bool ``(rows, cols)``),
    from a thumbnail of at most about ``_THUMBNAIL_PIXELS`` (and ``tile / 32`` times
    smaller than the level)."""
    import dask

    from pixelcam.slide.tissue import read_thumbnail, tile_tissue_fractions, tissue_mask

    if min_tissue <= 0:
        return np.ones((grid.rows, grid.cols), bool)
    max_factor = max(1.0, tile / 32, math.sqrt(grid.height * grid.width / _THUMBNAIL_PIXELS))
    # never on a default distributed client: the thumbnail is small and read here
    with dask.config.set(scheduler=scheduler if scheduler in SCHEDULERS else "threads"):
        thumb, scale = read_thumbnail(levels, level, max_factor)
    fractions = tile_tissue_fractions(tissue_mask(thumb), grid, scale)
    return fractions >= float(min_tissue)


def _blend_and_write(
    runner: TileRunner,
    grid: Any,
    jobs: list[tuple[int, int]],
    keep: np.ndarray,
    paths: dict[str, Path],
    meta: dict[str, Any],
    *,
    batch_size: int,
    window: str,
    compression_level: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Run ``jobs`` (tile keys, row-major) through ``runner``, blend their maps and write
    one pyramidal TIFF per map; no file is left behind on an error."""
    from pixelcam.slide.tiling import StripBlender, batched
    from pixelcam.slide.writer import PyramidWriter

    names = list(paths)
    blender = StripBlender(grid, names, window=window, keep=keep)
    batches = list(batched(jobs, batch_size))
    writers: dict[str, PyramidWriter] = {}
    try:
        for name in names:
            writers[name] = PyramidWriter(
                paths[name], (grid.height, grid.width), np.float32,
                metadata={**meta, "method": name}, compression_level=compression_level,
                mpp=meta.get("mpp"),
            )  # fmt: skip
        results = runner.run([[grid.box(r, c) for r, c in batch] for batch in batches])
        with contextlib.closing(results):
            done = 0
            for maps, batch in zip(results, batches):  # results first: it runs to its end
                for k, (r, c) in enumerate(batch):
                    # Rows above this tile row are final (tiles come in row-major order):
                    # handing them over first keeps the band at one tile row.
                    _emit(blender, grid.ys[r], writers)
                    blender.add(r, c, {n: maps[n][k] for n in names})
                done += len(batch)
                if progress is not None:
                    progress(done, len(jobs))
        _emit(blender, grid.height, writers)
        for writer in writers.values():
            writer.close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise


def _emit(blender: Any, until: int, writers: dict[str, Any]) -> None:
    """Hand rows ``[top, until)`` to the writers, at most a tile high at a time."""
    while blender.top < until:
        rows = blender.emit(min(until, blender.top + blender.grid.tile_h))
        for name, block in rows.items():
            np.clip(block, 0.0, 1.0, out=block)
            writers[name].write_rows(block)
