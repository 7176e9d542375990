"""Localisation maps: one small class per method on a shared base (pytorch-grad-cam style).

Methods (registry names): ``cam``, ``gradcampp``, ``layercam``, ``deepmil``, ``sat``,
``pixelcam``, and the two decoder references ``negev`` and ``unet``. Baseline maps are
min-max normalised per image at feature resolution; the PixelCAM map is the pixel head's
FG probability and the NEGEV/U-Net maps the decoder's (not normalised); all are bilinearly
upsampled (``align_corners=False``) and lie in [0, 1]. GradCAM++ follows ``grad-cam``'s
implementation of Chattopadhyay et al. Eq. 19, including its ``eps = 1e-6``.
"""

from __future__ import annotations

from pixelcam.cams.base import (
    GRADIENT_MODES,
    MAP_METHODS,
    CAMMethod,
    GradientCAMMethod,
    available_methods,
    get_method,
    method_names,
    minmax_normalize,
    register,
    upsample,
)
from pixelcam.cams.cam import CAM
from pixelcam.cams.compute import MapResult, compute_maps
from pixelcam.cams.decoder import NEGEV, UNet
from pixelcam.cams.deepmil import DeepMILCAM
from pixelcam.cams.gradcampp import GradCAMPlusPlus
from pixelcam.cams.layercam import LayerCAM
from pixelcam.cams.pixelcam import PixelCAM
from pixelcam.cams.sat import SATCAM

__all__ = [
    "CAM",
    "GRADIENT_MODES",
    "NEGEV",
    "SATCAM",
    "CAMMethod",
    "DeepMILCAM",
    "GradCAMPlusPlus",
    "GradientCAMMethod",
    "LayerCAM",
    "MapResult",
    "PixelCAM",
    "UNet",
    "available_methods",
    "compute_maps",
    "get_method",
    "MAP_METHODS",
    "method_names",
    "minmax_normalize",
    "register",
    "upsample",
]
