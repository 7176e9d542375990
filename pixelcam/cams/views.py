"""Test-time views of a map: the same images seen flipped and at other scales, each view's
map turned back onto the image, min-max normalised and averaged, then normalised again.

Multi-scale + flip averaging is the usual inference of weakly supervised segmentation
(e.g. Ahn & Kwak, CVPR 2018; Wang et al., SEAM, CVPR 2020). Here it cleans the teacher CAMs
PixelCAM draws its seeds from: on real GlaS, the lowest 5 % of a one-view CAM is outside
the glands 61 % of the time, of the 12-view CAM 68 % (``benchmarks/RESULTS.md`` section
8.2). The student's own map stays one forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pixelcam.cams.base import minmax_normalize
from pixelcam.registry import Registry

#: the four flips of an image: none, left-right, up-down, both (dims of a [B, C, H, W] batch)
FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


@dataclass(frozen=True)
class Views:
    """Scales (factors of the input side) x flips; each pair is one forward."""

    scales: tuple[float, ...]
    flips: tuple[tuple[int, ...], ...]

    def __len__(self) -> int:
        return len(self.scales) * len(self.flips)


#: named sets of views; ``single`` is the paper's one pass
VIEWS: Registry[Views] = Registry("map views")
VIEWS.register("single", order=0, help="the image once (the paper)")(Views((1.0,), ((),)))
VIEWS.register("flips", order=1, help="the image and its 3 flips: 4 forwards")(Views((1.0,), FLIPS))
VIEWS.register(
    "multiscale", order=2, help="4 flips at 0.75, 1 and 1.25 times the size: 12 forwards"
)(Views((0.75, 1.0, 1.25), FLIPS))


def viewed_maps(
    model: torch.nn.Module,
    images: torch.Tensor,
    method: str,
    target: torch.Tensor | Sequence[int],
    views: str | Views = "single",
) -> torch.Tensor:
    """``method``'s maps of ``images`` ``[B, 3, H, W]`` for class ``target``, averaged over
    ``views`` (a :data:`VIEWS` name): ``[B, H, W]`` in [0, 1]. ``single`` is exactly
    :func:`~pixelcam.cams.compute.compute_maps`'s map."""
    from pixelcam.cams.compute import compute_maps

    spec = VIEWS.get(views) if isinstance(views, str) else views
    size = tuple(images.shape[-2:])
    if len(spec) == 1 and spec.scales == (1.0,):
        return compute_maps(model, images, [method], target=target).maps[method]
    total = torch.zeros(images.shape[0], *size, device=images.device)
    for scale in spec.scales:
        side = tuple(max(8, round(s * scale)) for s in size)
        x = images if scale == 1.0 else F.interpolate(images, size=side, mode="bilinear",
                                                      align_corners=False)  # fmt: skip
        for dims in spec.flips:
            seen = torch.flip(x, dims) if dims else x
            m = compute_maps(model, seen, [method], target=target, size=size).maps[method]
            m = torch.flip(m, dims) if dims else m
            total += minmax_normalize(m.float())
    return minmax_normalize(total)
