"""PixelCAM for histology: weakly supervised localization with a pixel-wise classifier.

The library has no Qt or napari dependency. The public API, imported lazily so that
``import pixelcam`` stays cheap (torch and timm load on first use):

- data: :func:`open_dataset`, :func:`read_image`, :func:`write_synthetic_dataset`
- models: :func:`build_model`, :func:`load_checkpoint`, :func:`save_checkpoint`
- maps: :func:`compute_maps` (a batch, one forward), :func:`predict_maps` (one image)
- pseudo-labels: :func:`sample_seeds`
- training and evaluation: :class:`TrainConfig`, :func:`pixelcam.train.train`,
  :func:`evaluate_model`
- metrics: :mod:`pixelcam.metrics` (PxAP, accuracy, pixel rates, separability, t-test)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:  # the one version string: the installed distribution's (pyproject.toml)
    __version__ = version("napari-pixelcam")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


def lazy_attributes(module: str, api: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` importing each public name of ``api`` (name -> module) on
    first use, so that importing a package stays cheap."""

    def __getattr__(name: str) -> Any:
        if name in api:
            return getattr(import_module(api[name]), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


_API = {
    "open_dataset": "pixelcam.data",
    "read_image": "pixelcam.data",
    "write_synthetic_dataset": "pixelcam.data",
    "build_model": "pixelcam.models",
    "load_checkpoint": "pixelcam.models",
    "save_checkpoint": "pixelcam.models",
    "compute_maps": "pixelcam.cams",
    "predict_maps": "pixelcam.inference",
    "sample_seeds": "pixelcam.pseudo_labels",
    "TrainConfig": "pixelcam.train",
    "evaluate_model": "pixelcam.evaluation",
}

__all__ = sorted(_API)
__getattr__ = lazy_attributes(__name__, _API)
