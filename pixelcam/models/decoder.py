"""A U-Net decoder over a timm encoder (Ronneberger et al., 2015), for the two reference
localizers of the paper's tables:

- NEGEV (Belharbi et al., MIDL 2022): the decoder over the FROZEN encoder of a trained WSOL
  classifier, learned from CAM pseudo-labels (two-step WSOL);
- U-Net: the same architecture trained end to end on the ground-truth masks (the fully
  supervised upper bound).

The layout follows ``segmentation_models_pytorch``'s ``UnetDecoder`` (decoder widths
256-128-64-32-16, two 3x3 conv-BN-ReLU per block, a 3x3 segmentation conv), so on
ResNet-50 the decoder adds about 9.0 M parameters: the paper's Table 11 (NEGEV 32.5 M vs
GradCAM++ 23.5 M). Unlike smp, each block upsamples to the size of ITS skip feature rather
than by a fixed factor 2, so encoders with the WSOL stride change (ResNet layer3/layer4 at
stride 8) or with equal-resolution stages (ViTs) work too; the last block upsamples to the
input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pixelcam.errors import InputError

#: decoder widths of ``segmentation_models_pytorch``'s U-Net (for a 5-stage encoder)
DEFAULT_CHANNELS = (256, 128, 64, 32, 16)
#: what a decoder can be trained as (the model config's ``decoder`` value)
DECODER_KINDS = ("negev", "unet")


def decoder_channels(n_blocks: int, width: int = DEFAULT_CHANNELS[0]) -> list[int]:
    """Block widths ``width, width/2, ...`` (at least 8) for ``n_blocks`` blocks."""
    if width < 8:
        raise InputError(f"decoder width must be >= 8, got {width}")
    return [max(8, width >> i) for i in range(n_blocks)]


class _ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class DecoderBlock(nn.Module):
    """Upsample (nearest) to the skip's size, concatenate the skip, two conv-BN-ReLU."""

    def __init__(self, cin: int, skip: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _ConvBNReLU(cin + skip, cout)
        self.conv2 = _ConvBNReLU(cout, cout)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]
    ) -> torch.Tensor:
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UNetDecoder(nn.Module):
    """Decoder blocks from the deepest feature to the input resolution, then a 3x3 conv to
    2 classes (channel 1 = foreground).

    ``in_channels``: channels of the encoder's last feature map; ``skip_channels``: the
    skip features' channels, FINEST first (as :meth:`Backbone.forward_with_skips` returns
    them); ``channels``: one width per block (``len(skip_channels) + 1`` blocks; the last
    block has no skip and upsamples to the input size).
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: Sequence[int],
        channels: Sequence[int] | None = None,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        n_blocks = len(skip_channels) + 1
        channels = list(channels) if channels is not None else decoder_channels(n_blocks)
        if len(channels) != n_blocks:
            raise InputError(
                f"decoder needs {n_blocks} block widths for {len(skip_channels)} skip "
                f"features, got {len(channels)}: {channels}"
            )
        skips_coarse_first = list(skip_channels)[::-1] + [0]
        ins = [int(in_channels)] + channels[:-1]
        self.blocks = nn.ModuleList(
            DecoderBlock(cin, skip, cout)
            for cin, skip, cout in zip(ins, skips_coarse_first, channels)
        )
        self.segmentation = nn.Conv2d(channels[-1], num_classes, 3, padding=1)
        self.channels = channels

    def forward(
        self, features: torch.Tensor, skips: Sequence[torch.Tensor], size: tuple[int, int]
    ) -> torch.Tensor:
        """``[B, 2, H, W]`` logits at the input size ``size`` (``skips`` finest first)."""
        x = features
        targets = list(skips)[::-1] + [None]
        for block, skip in zip(self.blocks, targets):
            x = block(x, skip, tuple(skip.shape[-2:]) if skip is not None else tuple(size))
        return self.segmentation(x)
