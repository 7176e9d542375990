"""napari plugin for PixelCAM: thin widgets over the :mod:`pixelcam` library.

Nothing heavy is imported here: napari reads the manifest (``napari.yaml``) and imports the
widget and sample modules only when the user opens them.
"""

import sys

from pixelcam import __version__  # the one version string (installed metadata)  # noqa: F401

# torchvision (imported by timm) imports torch._dynamo, which loads Triton's LLVM-based
# native library. Loaded after napari has created an OpenGL context on Mesa (llvmpipe under
# Xvfb, and other Mesa drivers), that library crashes the process (segfault, measured here
# with torch 2.14.1 / triton 3.8). The plugin never compiles with Triton, so inside napari
# we hide it from torch; torch then reports Triton as absent. A process that already
# imported Triton keeps it.
if "triton" not in sys.modules:
    sys.modules["triton"] = None  # type: ignore[assignment]
