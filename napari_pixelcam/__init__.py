"""napari plugin for PixelCAM: thin widgets over the :mod:`pixelcam` library.

Nothing heavy is imported here: napari reads the manifest (``napari.yaml``) and imports the
widget and sample modules only when the user opens them.
"""

__version__ = "0.1.0"
