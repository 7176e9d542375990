"""Whole-slide images: lazy reading of pyramidal TIFF, OME-TIFF and SVS files."""

from __future__ import annotations

from pixelcam.slide.reader import SLIDE_EXTENSIONS, is_pyramidal, open_pyramid

__all__ = ["SLIDE_EXTENSIONS", "is_pyramidal", "open_pyramid"]
