"""CAM (Zhou et al., CVPR 2016): class weights times the last feature map.

``cam = sum_c w_{target,c} A_c`` (the bias is a constant and vanishes in the min-max). No
ReLU, as in the WSOL evaluation code (Choe et al. 2020). Any head with per-location class
scores (``class_map``) is supported: GAP and DeepMIL use their linear classifier, SAT its 3x3
conv classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from pixelcam.cams.base import CAMMethod, register
from pixelcam.models.heads import ImageHead
from pixelcam.models.model import ModelOutput, WSOLModel


@register
class CAM(CAMMethod):
    name = "cam"
    order = 0

    def supports(self, model: WSOLModel) -> bool:
        return type(model.head).class_map is not ImageHead.class_map

    def raw(self, model: WSOLModel, output: ModelOutput, target: torch.Tensor) -> torch.Tensor:
        feats = output.features
        classifier = getattr(model.head, "classifier", None)
        if isinstance(classifier, nn.Linear):
            weights = classifier.weight[target].to(feats.dtype)  # [B, C]
            return torch.einsum("bc,bchw->bhw", weights, feats)
        maps = model.head.class_map(feats)  # [B, K, h, w]
        return maps.gather(1, target[:, None, None, None].expand(-1, 1, *maps.shape[-2:]))[:, 0]
