"""Image-level heads (``gap``, ``deepmil``, ``sat``) and PixelCAM pixel heads.

Every image head maps the last feature map ``[B, C, h, w]`` to class logits ``[B, K]`` and
exposes ``class_map(features) -> [B, K, h, w]`` (per-location class scores, the classic CAM).
A head whose class score is linear in globally averaged features (``gap``) also gives the
closed-form gradient of a class score with respect to the features, ``w_c / (h*w)``
everywhere, which lets GradCAM++ and LayerCAM skip the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pixelcam.errors import InputError
from pixelcam.registry import Registry

#: image-level heads by name: a factory ``(in_channels, num_classes, **options) -> ImageHead``
IMAGE_HEADS: Registry[Callable[..., ImageHead]] = Registry("image head")
#: PixelCAM pixel heads by name: a factory ``(in_channels) -> nn.Module`` giving 2 logits
PIXEL_HEADS: Registry[Callable[[int], nn.Module]] = Registry("pixel head")


@dataclass
class HeadOutput:
    logits: torch.Tensor
    attention: torch.Tensor | None = None
    sat_mean_activation: torch.Tensor | None = None
    sat_norm: torch.Tensor | None = None


class ImageHead(nn.Module):
    """Base class of the image-level heads."""

    kind: str = ""
    #: whether the class score is ``w_c . mean_hw(A) + b_c`` (closed-form gradient)
    supports_closed_form: bool = False

    def class_map(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def closed_form_gradient(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """d score_target / d features, shape ``[B, C, 1, 1]`` (constant over space)."""
        raise InputError(f"the {self.kind!r} head has no closed-form gradient; use autograd")


class GAPHead(ImageHead):
    """Global average pooling + linear classifier (the CAM/GradCAM++/LayerCAM baseline head)."""

    kind = "gap"
    supports_closed_form = True

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, features: torch.Tensor, extras: dict | None = None) -> HeadOutput:
        return HeadOutput(logits=self.classifier(features.mean(dim=(2, 3))))

    def class_map(self, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kc,bchw->bkhw", self.classifier.weight, features)

    def closed_form_gradient(self, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        h, w = features.shape[-2:]
        g = self.classifier.weight[target] / float(h * w)  # [B, C]
        return g.to(features.dtype)[:, :, None, None]


class DeepMILHead(ImageHead):
    """Gated attention MIL pooling (Ilse et al., ICML 2018) over feature-map locations.

    ``score = conv_w(tanh(conv_v(A)) * sigmoid(conv_u(A)))`` (1x1 convs), ``a = softmax`` of
    the scores over space, pooled feature ``z = sum_hw a * A``, logits = ``linear(z)``.
    ``attention`` in the output holds the raw scores ``[B, h, w]``; the DeepMIL CAM is their
    spatial softmax.
    """

    kind = "deepmil"

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.attention_v = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.attention_u = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.attention_w = nn.Conv2d(hidden, 1, kernel_size=1)
        self.classifier = nn.Linear(in_channels, num_classes)

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        gated = torch.tanh(self.attention_v(features)) * torch.sigmoid(self.attention_u(features))
        return self.attention_w(gated)[:, 0]  # [B, h, w]

    def forward(self, features: torch.Tensor, extras: dict | None = None) -> HeadOutput:
        scores = self.scores(features)
        weights = F.softmax(scores.flatten(1), dim=1)  # [B, h*w]
        pooled = torch.einsum("bn,bcn->bc", weights, features.flatten(2))
        return HeadOutput(logits=self.classifier(pooled), attention=scores)

    def class_map(self, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kc,bchw->bkhw", self.classifier.weight, features)


def _gaussian_kernel(size: int = 3, nsig: float = 6.0) -> torch.Tensor:
    """The SAT authors' smoothing kernel: sqrt of the outer product of a binned normal."""
    from scipy.stats import norm  # local import: scipy is only needed here

    interval = (2 * nsig + 1.0) / size
    edges = np.linspace(-nsig - interval / 2.0, nsig + interval / 2.0, size + 1)
    k1 = np.diff(norm.cdf(edges))
    k2 = np.sqrt(np.outer(k1, k1))
    k2 = k2 / k2.sum()
    return torch.tensor(k2, dtype=torch.float32)[None, None]


class SATHead(ImageHead):
    """SAT (Wu et al., ICCV 2023) for vision transformers.

    Owns the spatial-aware (localisation) token and its positional embedding, used by
    :meth:`Backbone.forward_sat` in the last ``n_blocks`` blocks, and a 3x3 conv classifier on
    the patch-token map followed by average pooling. Outputs: ``attention`` = the mean of the
    last ``n_blocks`` token masks ``[B, h, w]`` in (0, 1) (the SAT CAM);
    ``sat_mean_activation`` ``[B]`` (batch-area loss input) and ``sat_norm`` ``[B]`` =
    mean of ``m*(1-m)`` of the 3x3-Gaussian-smoothed mask (normalisation loss). The total SAT
    loss is ``CE + |mean_B(sat_mean_activation) - area| + mean_B(sat_norm)``, see
    :func:`sat_regularization`. The fixed Gaussian kernel is a buffer, so we count 9 fewer
    parameters than the authors' code (where it is a frozen parameter).
    """

    kind = "sat"

    def __init__(self, in_channels: int, num_classes: int, n_blocks: int = 3) -> None:
        super().__init__()
        self.n_blocks = int(n_blocks)
        self.loc_token = nn.Parameter(torch.zeros(1, 1, in_channels))
        self.loc_embed = nn.Parameter(torch.zeros(1, 1, in_channels))
        nn.init.trunc_normal_(self.loc_token, std=0.02)
        nn.init.trunc_normal_(self.loc_embed, std=0.02)
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=1)
        nn.init.trunc_normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)
        self.register_buffer("smooth_kernel", _gaussian_kernel(), persistent=False)

    def token(self) -> torch.Tensor:
        return self.loc_token + self.loc_embed

    def forward(self, features: torch.Tensor, extras: dict | None = None) -> HeadOutput:
        if not extras or "sat_masks" not in extras:
            raise InputError("the SAT head needs the token masks of Backbone.forward_sat")
        masks = extras["sat_masks"]  # [B, n, h, w]
        cam = masks.mean(dim=1)
        logits = self.classifier(features).mean(dim=(2, 3))
        smooth = F.conv2d(cam[:, None], self.smooth_kernel.to(cam.dtype), padding=1)
        return HeadOutput(
            logits=logits,
            attention=cam,
            sat_mean_activation=cam.flatten(1).mean(1),
            sat_norm=((1 - smooth) * smooth).flatten(1).mean(1),
        )

    def class_map(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


def sat_regularization(
    mean_activation: torch.Tensor, norm_term: torch.Tensor, area: float = 0.35
) -> torch.Tensor:
    """SAT's two spatial constraints: ``|mean_B(act) - area| + mean_B(norm)`` (a scalar).

    The batch-area loss compares the batch mean of the per-image mean activations with the
    target area (the notes' 0.35; the SAT authors' CUB default is 0.25).
    """
    return (mean_activation.mean() - area).abs() + norm_term.mean()


class LinearPixelHead(nn.Module):
    """PixelCAM's pixel classifier: one 1x1 conv ``C -> 2`` with bias; channel 1 = FG."""

    kind = "linear"

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features)


class MLPPixelHead(nn.Module):
    """The 'multi-layer' ablation: three 1x1 convs, ``C -> C/2 -> C/4 -> 2``, ReLU between."""

    kind = "mlp"

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        c2, c4 = max(in_channels // 2, 1), max(in_channels // 4, 1)
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, c2, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c2, c4, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, 2, kernel_size=1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


@IMAGE_HEADS.register("gap", help="global average pooling + linear (CAM, GradCAM++, LayerCAM)")
def _gap(in_channels: int, num_classes: int, **kwargs: object) -> ImageHead:
    _no_kwargs("gap", kwargs)
    return GAPHead(in_channels, num_classes)


@IMAGE_HEADS.register("deepmil", help="gated attention MIL pooling (Ilse et al. 2018)")
def _deepmil(in_channels: int, num_classes: int, **kwargs: object) -> ImageHead:
    hidden = int(kwargs.pop("mil_hidden", 128))
    _no_kwargs("deepmil", kwargs)
    return DeepMILHead(in_channels, num_classes, hidden=hidden)


@IMAGE_HEADS.register("sat", help="SAT token attention head (ViT backbones only)")
def _sat(in_channels: int, num_classes: int, **kwargs: object) -> ImageHead:
    n_blocks = int(kwargs.pop("sat_blocks", 3))
    _no_kwargs("sat", kwargs)
    return SATHead(in_channels, num_classes, n_blocks=n_blocks)


PIXEL_HEADS.register("linear", help="1x1 conv FG/BG classifier (the paper's)")(
    lambda in_channels: LinearPixelHead(in_channels)
)
PIXEL_HEADS.register("mlp", help="multi-layer pixel classifier (Table 17 ablation)")(
    lambda in_channels: MLPPixelHead(in_channels)
)


def build_image_head(kind: str, in_channels: int, num_classes: int, **kwargs: object) -> ImageHead:
    """An image head by registry name (``gap``, ``deepmil``, ``sat`` or a registered one)."""
    return IMAGE_HEADS.get(kind)(in_channels, num_classes, **kwargs)


def build_pixel_head(kind: str | None, in_channels: int) -> nn.Module | None:
    """A pixel head by registry name; ``None``/``"none"``: no pixel head."""
    if kind is None or kind == "none":
        return None
    return PIXEL_HEADS.get(kind)(in_channels)


def _no_kwargs(kind: str, kwargs: dict) -> None:
    if kwargs:
        raise InputError(f"head {kind!r} takes no option(s) {', '.join(sorted(kwargs))}")
