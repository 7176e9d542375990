"""Models: timm backbones cut to their last feature map, WSOL heads, PixelCAM pixel heads,
and safetensors checkpoints."""

from __future__ import annotations

from pixelcam.models.backbones import Backbone, BackboneInfo, known_backbones
from pixelcam.models.checkpoint import (
    checkpoint_eval_size,
    load_checkpoint,
    load_state_into,
    read_checkpoint_info,
    save_checkpoint,
)
from pixelcam.models.heads import (
    IMAGE_HEADS,
    PIXEL_HEADS,
    DeepMILHead,
    GAPHead,
    ImageHead,
    LinearPixelHead,
    MLPPixelHead,
    SATHead,
    sat_regularization,
)
from pixelcam.models.model import ModelOutput, WSOLModel, build_model
from pixelcam.models.weights import (
    LoadReport,
    efficientnet_lite0_imagenet_state_dict,
    load_backbone_weights,
    read_state_dict,
)

__all__ = [
    "IMAGE_HEADS",
    "PIXEL_HEADS",
    "Backbone",
    "BackboneInfo",
    "DeepMILHead",
    "GAPHead",
    "ImageHead",
    "LinearPixelHead",
    "LoadReport",
    "MLPPixelHead",
    "ModelOutput",
    "SATHead",
    "WSOLModel",
    "build_model",
    "checkpoint_eval_size",
    "efficientnet_lite0_imagenet_state_dict",
    "known_backbones",
    "load_backbone_weights",
    "load_checkpoint",
    "load_state_into",
    "read_checkpoint_info",
    "read_state_dict",
    "sat_regularization",
    "save_checkpoint",
]
