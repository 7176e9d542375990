"""The maps of the two U-Net-decoder localizers: NEGEV (decoder over a frozen WSOL
classifier, trained on CAM pseudo-labels) and the fully supervised U-Net (trained on masks).

Both are the decoder's foreground probability ``softmax(seg_logits)[:, 1]`` at the input
resolution, NOT min-max normalised (like PixelCAM), class-agnostic, one forward pass. A
model offers the map of the role its decoder was trained for (``config["decoder"]``).
"""

from __future__ import annotations

import torch

from pixelcam.cams.base import CAMMethod, register
from pixelcam.models.model import ModelOutput, WSOLModel


class DecoderMap(CAMMethod):
    normalize = False
    class_specific = False

    def supports(self, model: WSOLModel) -> bool:
        return getattr(model, "decoder", None) is not None and (
            model.config.get("decoder") == self.name
        )

    def raw(self, model: WSOLModel, output: ModelOutput, target: torch.Tensor) -> torch.Tensor:
        if output.seg_logits is None:
            raise RuntimeError(f"{self.name}: the forward pass produced no decoder output")
        return torch.softmax(output.seg_logits.detach().float(), dim=1)[:, 1]


@register
class NEGEV(DecoderMap):
    """NEGEV (Belharbi et al., MIDL 2022)."""

    name = "negev"
    order = 6


@register
class UNet(DecoderMap):
    """Fully supervised U-Net (Ronneberger et al., 2015): the upper bound."""

    name = "unet"
    order = 7
