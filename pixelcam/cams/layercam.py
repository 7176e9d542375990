"""LayerCAM (Jiang et al., IEEE TIP 2021): ``relu(sum_c relu(g_c) * A_c)``.

With a GAP + linear head ``g_c = w_c/(h*w)`` everywhere (closed form, no backward pass).
Equals ``pytorch_grad_cam.LayerCAM`` (tested to 1e-4).
"""

from __future__ import annotations

import torch

from pixelcam.cams.base import GradientCAMMethod, register
from pixelcam.models.model import ModelOutput, WSOLModel


@register
class LayerCAM(GradientCAMMethod):
    name = "layercam"
    order = 2

    def raw(self, model: WSOLModel, output: ModelOutput, target: torch.Tensor) -> torch.Tensor:
        feats = output.features.detach()
        grads = self.gradient_of_score(model, output, target)
        if grads.shape[-2:] == (1, 1):
            return torch.relu(torch.einsum("bc,bchw->bhw", torch.relu(grads[..., 0, 0]), feats))
        return torch.relu((torch.relu(grads) * feats).sum(dim=1))
