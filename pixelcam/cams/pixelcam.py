"""PixelCAM (Guichemerre et al., MIDL 2025): the pixel head's foreground probability.

``softmax(pixel_logits)[:, 1]`` at feature resolution, NOT min-max normalised, then bilinear
upsampling. Class-agnostic; needs no gradient (one forward pass).
"""

from __future__ import annotations

import torch

from pixelcam.cams.base import CAMMethod, register
from pixelcam.models.model import ModelOutput, WSOLModel


@register
class PixelCAM(CAMMethod):
    name = "pixelcam"
    order = 5
    normalize = False
    class_specific = False

    def supports(self, model: WSOLModel) -> bool:
        return model.pixel_head is not None

    def raw(self, model: WSOLModel, output: ModelOutput, target: torch.Tensor) -> torch.Tensor:
        return torch.softmax(output.pixel_logits.detach().float(), dim=1)[:, 1]
