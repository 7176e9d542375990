"""SAT (Wu et al., ICCV 2023): the mean token mask of the last (3) transformer blocks.

Class-agnostic; min-max normalised per image like the other baselines.
"""

from __future__ import annotations

import torch

from pixelcam.cams.base import CAMMethod, register
from pixelcam.models.model import ModelOutput, WSOLModel


@register
class SATCAM(CAMMethod):
    name = "sat"
    order = 4
    class_specific = False

    def supports(self, model: WSOLModel) -> bool:
        return model.head.kind == "sat"

    def raw(self, model: WSOLModel, output: ModelOutput, target: torch.Tensor) -> torch.Tensor:
        return output.attention.detach()
