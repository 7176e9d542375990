"""Maps of one image at its own size: what the napari panel and ``pixelcam predict`` call.

The image is converted to RGB ``uint8`` (16-bit, grayscale, RGBA, float with NaN/inf are
all accepted), resized to the model's input size and normalised by
:func:`pixelcam.data.transforms.preprocess_batch` (the preprocessing of
:class:`~pixelcam.data.transforms.EvalTransform` and of the slide engine,
:func:`pixelcam.slide.engine.run_batch`), and every requested map comes from ONE forward
pass (:func:`pixelcam.cams.compute_maps`), upsampled back to the image size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pixelcam.data.io import to_rgb_uint8
from pixelcam.errors import InputError
from pixelcam.validation import MIN_IMAGE_SIDE, check_image_side, check_input_size

#: The smallest image side a map is made for (:data:`pixelcam.validation.MIN_IMAGE_SIDE`).
MIN_SIDE = MIN_IMAGE_SIDE


@dataclass
class ImageMaps:
    """Maps of one image (``maps[name]`` float32 ``(H, W)`` in [0, 1]) and the prediction."""

    maps: dict[str, np.ndarray]
    probs: np.ndarray
    pred: int
    target: int
    features: np.ndarray
    class_names: list[str]

    @property
    def pred_name(self) -> str:
        return self.class_names[self.pred]


def prepare_image(data: Any, name: str = "image") -> np.ndarray:
    """Any 2-D image array a user may have (napari layer data) -> ``uint8`` RGB ``(H, W, 3)``."""
    arr = np.asarray(data)
    if arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4) and arr.shape[0] not in (1, 3, 4):
        raise InputError(
            f"{name} has shape {arr.shape}: a 3-D stack, not a 2-D image; select one plane"
        )
    if arr.ndim > 3:
        raise InputError(f"{name} has shape {arr.shape}: expected a 2-D (RGB or gray) image")
    if arr.ndim >= 2:  # before converting: a 1 x 100000 sliver is refused at once
        channels_first = arr.ndim == 3 and arr.shape[-1] > 4 and arr.shape[0] in (1, 3, 4)
        check_image_side(arr.shape[1:] if channels_first else arr.shape, name)
    rgb = to_rgb_uint8(arr, name=name)
    check_image_side(rgb.shape, name)
    return rgb


def predict_maps(
    model: torch.nn.Module,
    image: Any,
    methods: Sequence[str],
    size: int | None = 224,
    target: int | None = None,
    class_names: Sequence[str] | None = None,
    device: torch.device | str | None = None,
) -> ImageMaps:
    """Maps of ``methods`` for one image, at the image's size (see the module docstring).

    Args:
        model: a pixelcam model.
        image: any 2-D image array (:func:`prepare_image`).
        methods: the maps, all from one forward.
        size: side the image is resized to for the model (None: its own size), from
            :data:`~pixelcam.validation.MIN_INPUT_SIDE` to ``MAX_INPUT_SIDE`` pixels.
        target: the class class-specific maps explain (default: the prediction).
        class_names: names of the classes (default: their indices).
        device: where to run (default: where the model's parameters are).
    """
    from pixelcam.cams import compute_maps
    from pixelcam.data.transforms import preprocess_batch

    size = check_input_size(size, "size", allow_none=True)
    rgb = prepare_image(image)
    if device is None:
        device = next(model.parameters()).device
    x = preprocess_batch(rgb, size).to(device)  # on the CPU, as the datasets' transforms
    res = compute_maps(model, x, methods=list(methods), target=target, size=rgb.shape[:2])
    names = list(class_names) if class_names else [str(i) for i in range(res.probs.shape[1])]
    return ImageMaps(
        maps={k: v[0].float().clamp(0, 1).cpu().numpy() for k, v in res.maps.items()},
        probs=res.probs[0].cpu().numpy(),
        pred=int(res.pred[0]),
        target=int(res.target[0]),
        features=res.features[0].float().cpu().numpy(),
        class_names=names,
    )
