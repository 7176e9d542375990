"""Whole-slide images: lazy reading of pyramidal TIFF, OME-TIFF and SVS files (and of the
scanner formats through OpenSlide), pixel sizes in microns (:mod:`~pixelcam.slide.mpp`), tiled
prediction with seam blending and tissue detection, and streamed pyramidal TIFF writing.

Layers, each importing only those below it: :mod:`~pixelcam.slide.engine` (read tiles, run
them through a model, the :class:`TileRunner` interface and its :class:`LocalRunner`) <-
:mod:`~pixelcam.slide.cluster` (its ``DaskRunner``) <- :mod:`~pixelcam.slide.predict`
(:func:`predict_slide`); :mod:`~pixelcam.slide.region` (live views) uses the engine only.
"""

from __future__ import annotations

from pixelcam.slide.engine import LocalRunner, TileRunner, read_tiles, run_batch
from pixelcam.slide.mpp import ScaleChoice, choose_level, read_mpp
from pixelcam.slide.predict import (
    LARGE_SIDE,
    SCHEDULERS,
    needs_tiling,
    output_paths,
    predict_slide,
)
from pixelcam.slide.reader import (
    OPENSLIDE_EXTENSIONS,
    SLIDE_EXTENSIONS,
    Slide,
    is_pyramidal,
    open_pyramid,
    open_slide,
)
from pixelcam.slide.tiling import (
    WINDOWS,
    StripBlender,
    TileGrid,
    batched,
    blend_window,
    window_profile,
)
from pixelcam.slide.tissue import read_thumbnail, tile_tissue_fractions, tissue_mask
from pixelcam.slide.writer import PyramidWriter, downsample2, pyramid_shapes, write_pyramid

__all__ = [
    "LARGE_SIDE",
    "OPENSLIDE_EXTENSIONS",
    "SCHEDULERS",
    "SLIDE_EXTENSIONS",
    "WINDOWS",
    "LocalRunner",
    "TileRunner",
    "PyramidWriter",
    "ScaleChoice",
    "Slide",
    "StripBlender",
    "TileGrid",
    "batched",
    "blend_window",
    "choose_level",
    "downsample2",
    "is_pyramidal",
    "needs_tiling",
    "open_pyramid",
    "open_slide",
    "output_paths",
    "predict_slide",
    "pyramid_shapes",
    "read_mpp",
    "read_thumbnail",
    "read_tiles",
    "run_batch",
    "tile_tissue_fractions",
    "tissue_mask",
    "window_profile",
    "write_pyramid",
]
