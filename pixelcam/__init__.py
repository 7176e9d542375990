"""PixelCAM for histology: weakly supervised localization with a pixel-wise classifier.

The library has no Qt or napari dependency. The public API, imported lazily so that
``import pixelcam`` stays cheap:

- data: :func:`pixelcam.data.open_dataset`, :func:`pixelcam.data.read_image`
- models: :func:`pixelcam.models.build_model`, :func:`pixelcam.models.load_checkpoint`
- maps: :func:`pixelcam.cams.compute_maps`
- metrics: :mod:`pixelcam.metrics`
"""

from __future__ import annotations

__version__ = "0.1.0"
