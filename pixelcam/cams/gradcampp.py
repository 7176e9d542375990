"""GradCAM++ (Chattopadhyay et al., WACV 2018), Eq. 19, as implemented by ``grad-cam``.

``alpha = g^2 / (2 g^2 + sum_ab(A) g^3 + eps)`` with ``eps = 1e-6`` (grad-cam's variant; the
paper has no eps), ``alpha = 0`` where ``g = 0``; channel weights ``sum_ab relu(g) alpha``;
``map = relu(sum_c weight_c A_c)``. With a GAP + linear head the gradient is ``w_c/(h*w)``
everywhere (closed form, no backward pass); the eps then matters because those gradients are
small (order 1e-4), which is why we keep grad-cam's exact formula: our maps equal
``pytorch_grad_cam.GradCAMPlusPlus`` (tested to 1e-4).
"""

from __future__ import annotations

import torch

from pixelcam.cams.base import GradientCAMMethod, register, spatial_sum
from pixelcam.models.model import ModelOutput, WSOLModel

EPS = 1e-6


@register
class GradCAMPlusPlus(GradientCAMMethod):
    name = "gradcampp"
    order = 1

    def raw(self, model: WSOLModel, output: ModelOutput, target: torch.Tensor) -> torch.Tensor:
        feats = output.features.detach()
        grads = self.gradient_of_score(model, output, target)
        h, w = feats.shape[-2:]
        g2 = grads * grads
        sum_a = feats.sum(dim=(2, 3), keepdim=True)
        g3 = g2 * grads
        alpha = g2 / (2 * g2 + sum_a * g3 + EPS)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        weights = spatial_sum(torch.relu(grads) * alpha, h * w)  # [B, C]
        return torch.relu(torch.einsum("bc,bchw->bhw", weights, feats))
