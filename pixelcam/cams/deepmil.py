"""DeepMIL (Ilse et al., ICML 2018): the spatial softmax of the gated attention scores.

Class-agnostic; min-max normalised per image like the other baselines.
"""

from __future__ import annotations

import torch

from pixelcam.cams.base import CAMMethod, register
from pixelcam.models.model import ModelOutput, WSOLModel


@register
class DeepMILCAM(CAMMethod):
    name = "deepmil"
    order = 3
    class_specific = False

    def supports(self, model: WSOLModel) -> bool:
        return model.head.kind == "deepmil"

    def raw(self, model: WSOLModel, output: ModelOutput, target: torch.Tensor) -> torch.Tensor:
        scores = output.attention.detach()
        b, h, w = scores.shape
        return torch.softmax(scores.reshape(b, h * w), dim=1).reshape(b, h, w)
