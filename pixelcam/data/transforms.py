"""Joint transforms: the same geometry for an image, its mask and its CAM.

The image is resized bilinearly (antialiased when shrinking), the mask with
``nearest-exact`` (pixel-centre aligned, so it agrees with the bilinear maps), the CAM
bilinearly like the image. Flips and crops use one draw for all three; colour jitter
touches the image only. Randomness comes from torch's global RNG, so
``torch.manual_seed`` and DataLoader worker seeding make a run reproducible, and the
draws do not depend on whether a mask or a CAM is passed (the image gets the same
geometry either way).

Training follows Choe et al. / the PixelCAM authors: resize to 256x256, random crop
224x224, random horizontal and vertical flips, colour jitter (0.5, 0.5, 0.5, 0.05),
ImageNet normalisation; evaluation resizes straight to 224x224.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pixelcam.errors import InputError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EvalTransform",
    "TrainTransform",
    "denormalize",
    "preprocess_batch",
    "resize_map",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Size = int | tuple[int, int] | None


def _as_size(size: Size, name: str) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise InputError(f"{name} must be a positive int or (height, width), got {size}")
    return size  # type: ignore[return-value]


def _resize_float(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [C, H, W] (align_corners=False; antialiased when shrinking)."""
    if tuple(x.shape[-2:]) == size:
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(
        x[None], size=size, mode="bilinear", align_corners=False, antialias=shrink
    )[0]


def _resize_mask(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(m.shape[-2:]) == size:
        return m
    out = F.interpolate(m[None, None].float(), size=size, mode="nearest-exact")[0, 0]
    return out.to(torch.uint8)


def resize_map(cam: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D map to ``size`` (H, W) bilinearly, as the transforms do; float32 numpy."""
    t = cam if isinstance(cam, torch.Tensor) else torch.from_numpy(np.asarray(cam))
    t = t.detach().float().cpu()
    if t.ndim != 2:
        raise InputError(f"a map must be 2-D (H, W), got shape {tuple(t.shape)}")
    return _resize_float(t[None], (int(size[0]), int(size[1])))[0].numpy()


def _prepare(image: Any, mask: Any, cam: Any) -> tuple[torch.Tensor, Any, Any]:
    if isinstance(image, torch.Tensor):
        img = image.detach()
        if img.ndim == 3 and img.shape[0] != 3 and img.shape[-1] == 3:
            img = img.permute(2, 0, 1)
        img = img.float() / 255.0 if image.dtype == torch.uint8 else img.float()
    else:
        array = np.asarray(image)
        if array.ndim != 3 or array.shape[-1] != 3:
            raise InputError(f"expected an RGB image (H, W, 3), got shape {array.shape}")
        img = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
        img = img.float() / 255.0 if array.dtype == np.uint8 else img.float()
    if img.ndim != 3 or img.shape[0] != 3:
        raise InputError(f"expected an RGB image [3, H, W], got shape {tuple(img.shape)}")
    size = (int(img.shape[1]), int(img.shape[2]))
    m = None
    if mask is not None:
        m = mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask))
        m = m.detach().to(torch.uint8)
        if tuple(m.shape) != size:
            raise InputError(
                f"mask is {tuple(m.shape)} (HxW) but the image is {size}; they must match"
            )
    c = None
    if cam is not None:
        c = cam if isinstance(cam, torch.Tensor) else torch.from_numpy(np.asarray(cam))
        c = c.detach().float()
        if c.ndim != 2:
            raise InputError(f"a CAM must be 2-D (H, W), got shape {tuple(c.shape)}")
        c = _resize_float(c[None], size)  # any resolution -> the image's
    return img, m, c


def _finish(
    img: torch.Tensor, m: torch.Tensor | None, c: torch.Tensor | None, normalize: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    img = img.clamp(0.0, 1.0)
    if normalize:
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
        img = (img - mean) / std
    return (
        img.contiguous(),
        None if m is None else m.contiguous(),
        None if c is None else c[0].contiguous(),
    )


class TrainTransform:
    """Resize -> random crop -> random h/v flips -> colour jitter -> normalise.

    ``resize``/``crop``: int (square) or (height, width), None to skip. ``color_jitter``:
    (brightness, contrast, saturation, hue) as in torchvision, None to skip.
    Call as ``t(image, mask=None, cam=None)``; returns (float32 [3, h, w],
    uint8 [h, w] or None, float32 [h, w] or None).
    """

    def __init__(
        self,
        resize: Size = 256,
        crop: Size = 224,
        hflip: bool = True,
        vflip: bool = True,
        color_jitter: Sequence[float] | None = (0.5, 0.5, 0.5, 0.05),
        normalize: bool = True,
    ) -> None:
        self.resize = _as_size(resize, "resize")
        self.crop = _as_size(crop, "crop")
        if (
            self.resize
            and self.crop
            and (self.crop[0] > self.resize[0] or self.crop[1] > self.resize[1])
        ):
            raise InputError(f"crop {self.crop} is larger than resize {self.resize}")
        self.hflip = bool(hflip)
        self.vflip = bool(vflip)
        self.normalize = bool(normalize)
        self.color_jitter = tuple(float(v) for v in color_jitter) if color_jitter else None
        if self.color_jitter is not None and len(self.color_jitter) != 4:
            raise InputError(
                "color_jitter must be (brightness, contrast, saturation, hue), "
                f"got {self.color_jitter}"
            )
        self._jitter = None
        if self.color_jitter is not None and any(self.color_jitter):
            from torchvision.transforms import ColorJitter

            self._jitter = ColorJitter(*self.color_jitter)

    def __repr__(self) -> str:
        return (
            f"TrainTransform(resize={self.resize}, crop={self.crop}, hflip={self.hflip}, "
            f"vflip={self.vflip}, color_jitter={self.color_jitter}, normalize={self.normalize})"
        )

    def __call__(
        self, image: Any, mask: Any = None, cam: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        img, m, c = _prepare(image, mask, cam)
        if self.resize is not None:
            img = _resize_float(img, self.resize)
            m = None if m is None else _resize_mask(m, self.resize)
            c = None if c is None else _resize_float(c, self.resize)
        if self.crop is not None:
            height, width = img.shape[-2:]
            ch, cw = self.crop
            if ch > height or cw > width:
                raise InputError(
                    f"crop {self.crop} is larger than the image ({height}, {width}); "
                    "resize first or use a smaller crop"
                )
            top = int(torch.randint(0, height - ch + 1, (1,)).item())
            left = int(torch.randint(0, width - cw + 1, (1,)).item())
            img = img[:, top : top + ch, left : left + cw]
            m = None if m is None else m[top : top + ch, left : left + cw]
            c = None if c is None else c[:, top : top + ch, left : left + cw]
        if self.hflip and torch.rand(1).item() < 0.5:
            img = img.flip(-1)
            m = None if m is None else m.flip(-1)
            c = None if c is None else c.flip(-1)
        if self.vflip and torch.rand(1).item() < 0.5:
            img = img.flip(-2)
            m = None if m is None else m.flip(-2)
            c = None if c is None else c.flip(-2)
        if self._jitter is not None:
            img = self._jitter(img.clamp(0.0, 1.0))
        return _finish(img, m, c, self.normalize)


class EvalTransform:
    """Resize to ``size`` (int = square, (h, w), or None = keep) and normalise."""

    def __init__(self, size: Size = 224, normalize: bool = True) -> None:
        self.size = _as_size(size, "size")
        self.normalize = bool(normalize)

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size}, normalize={self.normalize})"

    def __call__(
        self, image: Any, mask: Any = None, cam: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        img, m, c = _prepare(image, mask, cam)
        if self.size is not None:
            img = _resize_float(img, self.size)
            m = None if m is None else _resize_mask(m, self.size)
            c = None if c is None else _resize_float(c, self.size)
        return _finish(img, m, c, self.normalize)


def preprocess_batch(
    images: Any,
    size: Size = 224,
    *,
    device: torch.device | str | None = None,
    uint8_resize: bool = False,
) -> torch.Tensor:
    """RGB ``uint8`` image(s) -> the normalised float batch a model takes, as
    :class:`EvalTransform` makes it (the same numbers): ``/ 255``, bilinear resize
    (antialiased when shrinking), ``(x - mean) / std`` with the ImageNet statistics.

    The one preprocessing of :func:`pixelcam.inference.predict_maps` and of the slide
    engine (:func:`pixelcam.slide.engine.run_batch`).

    Args:
        images: one image ``(H, W, 3)`` or a batch ``(B, H, W, 3)``, ``uint8`` (numpy or
            torch).
        size: side (int) or ``(height, width)`` to resize to; None keeps the images' size.
        device: where the batch is made (the pixels are moved there first); default: where
            ``images`` are (the CPU for numpy).
        uint8_resize: on the CPU, resize the ``uint8`` pixels (torch's ``uint8`` kernel, about
            10x faster than in float, within a grey level of it) instead of the floats.

    Returns:
        float32 ``[B, 3, h, w]``, contiguous (``B = 1`` for one image).
    """
    size = _as_size(size, "size")
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if x.dtype != torch.uint8 or x.ndim not in (3, 4) or x.shape[-1] != 3:
        raise InputError(
            f"expected uint8 RGB image(s) (H, W, 3) or (B, H, W, 3), got {x.dtype} {tuple(x.shape)}"
        )
    x = x.detach().contiguous()
    x = (x[None] if x.ndim == 3 else x).permute(0, 3, 1, 2)  # channels last in memory
    if device is not None:
        x = x.to(device)
    resize = size is not None and tuple(x.shape[-2:]) != size
    kw: dict[str, Any] = {"size": size, "mode": "bilinear", "align_corners": False}
    if resize:
        kw["antialias"] = size[0] < x.shape[-2] or size[1] < x.shape[-1]  # type: ignore[index]
    with torch.no_grad():
        if resize and uint8_resize and x.device.type == "cpu":
            x = F.interpolate(x, **kw).contiguous().float().div_(255.0)
        else:  # .float() makes a new tensor: the in-place steps touch no input
            x = x.float().div_(255.0)
            x = F.interpolate(x, **kw) if resize else x
        x = x.contiguous().clamp_(0.0, 1.0)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std)


def denormalize(tensor: torch.Tensor) -> np.ndarray:
    """Undo ImageNet normalisation: [3, H, W] -> uint8 (H, W, 3); [B, 3, H, W] -> (B, H, W, 3)."""
    t = tensor.detach().float().cpu()
    if t.ndim not in (3, 4) or t.shape[-3] != 3:
        raise InputError(f"expected [3, H, W] or [B, 3, H, W], got {tuple(t.shape)}")
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (t * std + mean).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return rgb.movedim(-3, -1).numpy()
