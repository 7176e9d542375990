"""The shared base of the map methods and their registry.

A method computes a RAW map ``[B, h, w]`` at feature resolution from one
:class:`~pixelcam.models.ModelOutput`; the base does the rest (:meth:`CAMMethod.finalize`):
non-finite values -> 0, per-image min-max normalisation for the baselines (a constant map
becomes zeros), bilinear upsampling (``align_corners=False``) to the image size, and a clamp
to [0, 1]. PixelCAM's map is a probability and is NOT min-max normalised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F

from pixelcam.errors import InputError
from pixelcam.registry import Registry

if TYPE_CHECKING:
    from pixelcam.models.model import ModelOutput, WSOLModel

GRADIENT_MODES = ("auto", "closed_form", "autograd")


def minmax_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max to [0, 1] over the last two dims; constant maps become zeros."""
    flat = maps.flatten(-2)
    lo = flat.min(dim=-1, keepdim=True).values
    hi = flat.max(dim=-1, keepdim=True).values
    rng = hi - lo
    safe = torch.where(rng > 0, rng, torch.ones_like(rng))
    out = torch.where(rng > 0, (flat - lo) / safe, torch.zeros_like(flat))
    return out.reshape(maps.shape)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, ``align_corners=False``: ``[B, h, w] -> [B, H, W]``."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


class CAMMethod:
    """One localisation-map method (pytorch-grad-cam style: small subclasses, shared base).

    Subclasses set ``name``, ``normalize`` (min-max the raw map) and ``class_specific``
    (uses the target class), and implement :meth:`raw`; gradient methods also override
    :meth:`needs_autograd`.
    """

    name: ClassVar[str] = ""
    #: listing order (baselines first, then PixelCAM, then the decoder references)
    order: ClassVar[float] = 100.0
    normalize: ClassVar[bool] = True
    class_specific: ClassVar[bool] = True

    def supports(self, model: WSOLModel) -> bool:
        return True

    def applies(self, model: WSOLModel) -> bool:
        """:meth:`supports`, and a class-specific map also needs a TRAINED classifier (the
        fully supervised U-Net carries an image head that is never trained)."""
        if self.class_specific and model.config.get("decoder") == "unet":
            return False
        return self.supports(model)

    def needs_autograd(self, model: WSOLModel) -> bool:
        return False

    def raw(self, model: WSOLModel, output: ModelOutput, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def finalize(self, raw: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        maps = torch.nan_to_num(raw.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
        if self.normalize:
            maps = minmax_normalize(maps)
        if size is not None:
            maps = upsample(maps, size)
        return maps.clamp_(0.0, 1.0)

    def __call__(
        self,
        model: WSOLModel,
        images: torch.Tensor,
        target: torch.Tensor | int | None = None,
        size: int | tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Maps ``[B, H, W]`` in [0, 1] for a batch (runs the model through the package's
        :func:`~pixelcam.cams.compute_maps`)."""
        from pixelcam.cams import compute_maps

        return compute_maps(model, images, [self], target=target, size=size).maps[self.name]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GradientCAMMethod(CAMMethod):
    """A method that needs the gradient of the target class score on the last feature map.

    ``gradient``: ``"closed_form"`` (heads linear in globally pooled features: the gradient is
    ``w_c / (h*w)`` everywhere; no backward pass), ``"autograd"`` (any head; back-propagates
    through the heads only), or ``"auto"`` (closed form when the head allows it).
    """

    def __init__(self, gradient: str = "auto") -> None:
        if gradient not in GRADIENT_MODES:
            raise InputError(f"gradient must be one of {', '.join(GRADIENT_MODES)}: {gradient!r}")
        self.gradient = gradient

    def mode(self, model: WSOLModel) -> str:
        closed = bool(getattr(model.head, "supports_closed_form", False))
        if self.gradient == "auto":
            return "closed_form" if closed else "autograd"
        return self.gradient

    def supports(self, model: WSOLModel) -> bool:
        return self.gradient != "closed_form" or bool(
            getattr(model.head, "supports_closed_form", False)
        )

    def needs_autograd(self, model: WSOLModel) -> bool:
        return self.mode(model) == "autograd"

    def gradient_of_score(
        self, model: WSOLModel, output: ModelOutput, target: torch.Tensor
    ) -> torch.Tensor:
        """``d logits[b, target[b]] / d features``: ``[B, C, 1, 1]`` (closed form, constant
        over space) or ``[B, C, h, w]`` (autograd). Cached on ``output`` so several methods
        share one backward pass.
        """
        mode = self.mode(model)
        key = ("grad", mode, tuple(target.tolist()))
        if key in output.cache:
            return output.cache[key]
        if mode == "closed_form":
            grad = model.head.closed_form_gradient(output.features, target)
        else:
            feats = output.features
            if not feats.requires_grad:
                raise InputError(
                    f"{self.name} with autograd needs features that require grad: use "
                    "compute_maps(), which prepares them"
                )
            score = output.logits.gather(1, target[:, None]).sum()
            (grad,) = torch.autograd.grad(score, feats, retain_graph=True)
        grad = grad.detach()
        output.cache[key] = grad
        return grad

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gradient={self.gradient!r})"


def spatial_sum(t: torch.Tensor, hw: int) -> torch.Tensor:
    """Sum over the last two dims; a ``[..., 1, 1]`` tensor stands for a constant map."""
    if t.shape[-2:] == (1, 1):
        return t[..., 0, 0] * hw
    return t.sum(dim=(-2, -1))


#: every map method, by name; modules of :mod:`pixelcam.cams` register on first listing
MAP_METHODS: Registry[type[CAMMethod]] = Registry("map method", package="pixelcam.cams")


def register(cls: type[CAMMethod]) -> type[CAMMethod]:
    """Class decorator: make a method available by its ``name`` (listed by its ``order``)."""
    return MAP_METHODS.register(cls.name, order=cls.order, help=cls.__doc__ or "")(cls)


def method_names() -> list[str]:
    """Registered method names: cam, gradcampp, layercam, deepmil, sat, pixelcam, negev,
    unet, then custom ones."""
    return MAP_METHODS.names()


def get_method(name: str, **options: object) -> CAMMethod:
    """A method instance by name; ``options`` e.g. ``gradient="autograd"`` for GradCAM++."""
    cls = MAP_METHODS.get(name)
    if not issubclass(cls, GradientCAMMethod):
        options.pop("gradient", None)
    try:
        return cls(**options)
    except TypeError as exc:
        raise InputError(f"bad options for map method {name!r}: {exc}") from exc


def available_methods(model: WSOLModel) -> list[str]:
    """Names of the methods that can run on ``model`` (registry order)."""
    return [n for n in MAP_METHODS.names() if MAP_METHODS.get(n)().applies(model)]
