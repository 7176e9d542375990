"""The limits every entry point shares (the CLI, the Python API, the napari plugin): one
place for the smallest image a map is made of, the model input sizes, the pixel-rate
threshold and the counts, each with a check that raises an
:class:`~pixelcam.errors.InputError` naming the value.

Nothing here imports torch: the CLI's argument parser and the plugin use these checks
before anything heavy is loaded.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from pixelcam.errors import InputError

__all__ = [
    "MAX_INPUT_SIDE",
    "MAX_WORKERS",
    "MIN_IMAGE_SIDE",
    "MIN_INPUT_SIDE",
    "check_count",
    "check_image_side",
    "check_input_size",
    "check_threshold",
    "is_random_init",
]

#: The smallest image side (pixels) a map is computed for: the napari panel, the reader
#: plugin, :func:`pixelcam.inference.predict_maps` and ``pixelcam predict`` refuse smaller.
MIN_IMAGE_SIDE = 8
#: The smallest model input side (``--size``, ``--resize``, ``--crop``, ``--eval-size``):
#: below it a backbone's feature map is a pixel or less (``predict_slide`` uses the same).
MIN_INPUT_SIDE = 16
#: The largest model input side: a 8192 px input already needs gigabytes of activations.
MAX_INPUT_SIDE = 8192
#: The most data-loader worker processes a run may ask for.
MAX_WORKERS = 256

#: ``weights`` values that mean "random initialisation" (besides None).
RANDOM_INIT = ("", "none")


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
        raise InputError(f"{name} must be an integer, got {value!r}")
    return int(value)


def check_count(value: Any, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer in ``[minimum, maximum]`` (a batch size, a number of workers...)."""
    number = _as_int(value, name)
    if number < minimum or (maximum is not None and number > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise InputError(f"{name} must be >= {minimum}{upper}, got {number}")
    return number


def check_input_size(value: Any, name: str = "size", allow_none: bool = False) -> int | None:
    """A model input side in ``[MIN_INPUT_SIDE, MAX_INPUT_SIDE]`` (None when allowed)."""
    if value is None and allow_none:
        return None
    number = _as_int(value, name)
    if not MIN_INPUT_SIDE <= number <= MAX_INPUT_SIDE:
        raise InputError(
            f"{name} must be between {MIN_INPUT_SIDE} and {MAX_INPUT_SIDE} pixels, got {number}"
        )
    return number


def check_threshold(value: Any, name: str = "threshold") -> float:
    """A map threshold: a finite number in [0, 1] (maps are probabilities)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}")
    return number


def check_image_side(shape: Any, name: str = "image") -> None:
    """An image of ``shape`` ``(H, W, ...)`` is large enough for a map."""
    h, w = int(shape[0]), int(shape[1])
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputError(
            f"{name} is {w}x{h} pixels: too small for a map (each side must be at least "
            f"{MIN_IMAGE_SIDE} pixels)"
        )


def is_random_init(weights: Any) -> bool:
    """Whether a ``weights`` setting means random initialisation: None, ``""``, ``"none"``."""
    return weights is None or (isinstance(weights, str) and weights.strip().lower() in RANDOM_INIT)
